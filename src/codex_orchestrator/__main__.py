"""Allow ``python -m codex_orchestrator``."""

from codex_orchestrator.cli import main

raise SystemExit(main())
