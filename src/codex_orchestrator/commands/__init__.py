"""One module per command; each exposes ``run(args, reporter) -> exit code``."""
