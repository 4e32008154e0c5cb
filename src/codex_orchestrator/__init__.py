"""codex-orchestrator: run engineering pipelines and keep durable, reviewable run records."""

__version__ = "0.1.0"
