"""Who runs a command, and with which tunables, for commands that must work with a broken config."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping

from codex_orchestrator.records.workspace import Settings, Workspace


def default_actor() -> str:
    """The user running the command (``$USER``, else the login name, else ``unknown``), as
    valid text: bytes that are not UTF-8 are recorded as U+FFFD (see `jsonio.valid_text`)."""
    from codex_orchestrator.util.jsonio import valid_text

    try:
        return valid_text(os.environ.get("USER") or getpass.getuser())
    except (KeyError, OSError):
        return "unknown"


def config_settings(workspace: Workspace) -> Mapping[str, object]:
    """The config's ``settings``; none when it does not load (a broken config must not keep
    anyone from stopping or pruning runs)."""
    from codex_orchestrator.errors import OrchestratorError
    from codex_orchestrator.pipelines.config import load_config

    try:
        return load_config(workspace.root).settings
    except OrchestratorError:
        return {}


def settings_or_defaults(workspace: Workspace) -> Settings:
    """The tunables from the config; the defaults when it does not load."""
    from codex_orchestrator.errors import OrchestratorError

    try:
        return Settings.resolve(config_settings(workspace))
    except OrchestratorError:
        return Settings.resolve()
