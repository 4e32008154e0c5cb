"""Durable per-task records: the run history (`state_store`) and the safe write order of a
finished run (`coordinator`)."""
