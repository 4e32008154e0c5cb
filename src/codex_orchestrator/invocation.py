"""Who runs a command, and with which tunables, for commands that must work with a broken config."""

from __future__ import annotations

import getpass
import os

from codex_orchestrator.workspace import Settings, Workspace


def default_actor() -> str:
    """The user running the command (``$USER``, else the login name, else ``unknown``)."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def settings_or_defaults(workspace: Workspace) -> Settings:
    """The tunables from the config; the defaults when it does not load (a broken config must
    not keep anyone from stopping or pruning runs)."""
    from codex_orchestrator.config import load_config
    from codex_orchestrator.errors import OrchestratorError

    try:
        return Settings.resolve(load_config(workspace.root).settings)
    except OrchestratorError:
        return Settings.resolve()
