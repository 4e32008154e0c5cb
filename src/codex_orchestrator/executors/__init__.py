"""Executors other than the local one, each imported only when chosen (see docs/executors.md)."""
