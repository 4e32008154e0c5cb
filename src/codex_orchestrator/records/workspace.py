"""Where things live: the repo root, the runs and out roots, and the run-time tunables.

Tunables resolve as environment variable, else the config's ``settings``, else the default.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.errors import ConfigError, OutsideRootError
from codex_orchestrator.records.layout import (
    default_state_roots,
    find_root,
    make_state_directory,
    state_directories,
)
from codex_orchestrator.records.run_layout import RUN_SUBDIRS
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.locks import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_INITIAL_DELAY_MS,
    DEFAULT_MAX_DELAY_MS,
)
from codex_orchestrator.util.numeric import parse_number
from codex_orchestrator.util.safefs import resolve_within

ROOT_ENV = "CODEX_ORCHESTRATOR_ROOT"
TASK_ENV = "MCP_RUNNER_TASK_ID"
DEFAULT_TASK = "default"
RUNS_ENV = "CODEX_ORCHESTRATOR_RUNS_DIR"
OUT_ENV = "CODEX_ORCHESTRATOR_OUT_DIR"
_RECORD_FIX = "remove the link (a record may only land inside its root)"


class Settings(NamedTuple):
    """Run-time tunables (docs/configuration.md)."""

    heartbeat_interval_seconds: float = 5.0
    heartbeat_stale_after_seconds: float = 30.0
    manifest_throttle_seconds: float = 30.0
    lock_attempts: int = DEFAULT_ATTEMPTS
    lock_initial_delay_ms: float = DEFAULT_INITIAL_DELAY_MS
    lock_backoff_factor: float = DEFAULT_BACKOFF_FACTOR
    lock_max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    kill_grace_seconds: float = 5.0
    max_parallel: int | None = None  # stages of a graph pipeline at once; None: CPU count
    report: bool = False
    #: Without a live view, print only the summary, not each stage's output (``--quiet``).
    quiet: bool = False
    #: Dask: how long a remote stage's link may stay silent before either end gives it up
    #: (None: a third of ``heartbeat_stale_after_seconds``, at least 2 s).
    dask_link_timeout_seconds: float | None = None
    #: Dask: the whole connection to a scheduler (probe, version check, client).
    dask_connect_timeout_seconds: float = 10.0
    #: Stage cache (docs/cache.md): false runs every stage and reads no entry.
    cache: bool = True
    #: Stage cache: ``prune`` evicts entries, least recently used first, down to this size.
    cache_max_bytes: int = 1 << 30
    #: Stage cache: the built-in diagnostics' build, lint and test stages cache on git's files.
    diagnostics_cache: bool = False

    @classmethod
    def resolve(
        cls,
        config_settings: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Merge defaults, the config's ``settings`` and the environment (env wins)."""
        environ = os.environ if env is None else env
        values: dict[str, float | int] = {}
        for name in cls._fields:
            raw: object = (config_settings or {}).get(name)
            source = f"settings.{name}"
            env_name = SETTING_ENV_NAMES.get(name)
            if env_name and environ.get(env_name, "").strip():
                raw, source = environ[env_name].strip(), f"environment variable {env_name}"
            if raw is None:
                continue
            if name in BOOLEAN_SETTINGS:
                values[name] = raw is True
                continue
            values[name] = check_setting(name, raw, source)
        return cls(**values)  # type: ignore[arg-type]


#: The environment variable that overrides each setting (it wins over the config).
SETTING_ENV_NAMES = {
    "heartbeat_interval_seconds": "CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS",
    "heartbeat_stale_after_seconds": "CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS",
    "manifest_throttle_seconds": "CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS",
    "max_parallel": "CODEX_ORCHESTRATOR_MAX_PARALLEL",
    "dask_link_timeout_seconds": "CODEX_ORCHESTRATOR_DASK_LINK_TIMEOUT_SECONDS",
    "dask_connect_timeout_seconds": "CODEX_ORCHESTRATOR_DASK_CONNECT_TIMEOUT_SECONDS",
}

SETTING_NAMES = Settings._fields
INTEGER_SETTINGS = frozenset({"lock_attempts", "max_parallel", "cache_max_bytes"})
DIAGNOSTICS_CACHE_SETTING = "diagnostics_cache"
#: The stage cache's directory: a path setting (config only), not a tunable in `Settings`.
CACHE_DIR_SETTING = "cache_dir"
#: Switches (true/false, config only): ``report`` writes each finished run's HTML report;
#: ``quiet`` keeps stage output off a pipe or CI log (only the summary is printed); ``cache``
#: and ``diagnostics_cache`` (docs/cache.md).
BOOLEAN_SETTINGS = frozenset({"report", "quiet", "cache", DIAGNOSTICS_CACHE_SETTING})
SETTING_LIMITS: dict[str, float] = {
    "heartbeat_interval_seconds": 3600,
    "heartbeat_stale_after_seconds": 7 * 86400,
    "manifest_throttle_seconds": 86400,
    "lock_attempts": 100,
    "lock_initial_delay_ms": 60_000,
    "lock_backoff_factor": 10,
    "lock_max_delay_ms": 60_000,
    "kill_grace_seconds": 3600,
    "max_parallel": 1024,
    "dask_link_timeout_seconds": 3600,
    "dask_connect_timeout_seconds": 600,
    "cache_max_bytes": 10**15,
}


#: Lower bounds beyond "positive": a heartbeat faster than this only burns the disk; a link
#: timeout shorter than a few keep-alives (two a second) would end healthy stages.
SETTING_MINIMUMS: dict[str, float] = {
    "heartbeat_interval_seconds": 0.05,
    "dask_link_timeout_seconds": 1.5,
}


def check_setting(name: str, raw: object, source: str) -> float | int:
    """Validate tunable ``name``: a positive number within its limits (whole for counts)."""
    limit = SETTING_LIMITS[name]
    minimum = SETTING_MINIMUMS.get(name)
    kind = "whole number" if name in INTEGER_SETTINGS else "number"
    fix = f"give a positive {kind} of at most {limit:g}"
    if minimum is not None:
        fix = f"give a {kind} from {minimum:g} to {limit:g}"
    value = parse_number(
        raw,
        source,
        low=minimum if minimum is not None else 0,
        low_inclusive=minimum is not None,
        high=limit,
        whole=name in INTEGER_SETTINGS,
        fix=fix,
        error=ConfigError,
    )
    return int(value) if name in INTEGER_SETTINGS else value


def with_flag(settings: Settings, name: str, raw: str | None, flag: str) -> Settings:
    """``settings`` with tunable ``name`` taken from command-line ``flag`` when it was given."""
    if raw is None:
        return settings
    return settings._replace(**{name: check_setting(name, raw, flag)})  # type: ignore[arg-type]


class Workspace(NamedTuple):
    """The repository root and the roots of run records (``runs``) and task state (``out``).

    All three are real paths (links resolved), so that every path printed is the real one.
    A default runs or out root that a link sends outside the repository is refused; one set
    explicitly (``CODEX_ORCHESTRATOR_RUNS_DIR``/``_OUT_DIR``) may be anywhere. Directories
    below them (``<task>``, ``<task>/cli``, a run directory) must stay inside them.
    """

    root: Path
    runs_dir: Path
    out_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Workspace":
        """Build the workspace from ``CODEX_ORCHESTRATOR_*`` variables; without them the root
        is found from the working directory and the state roots follow the repository's layout
        (`layout`)."""
        environ = os.environ if env is None else env
        explicit = environ.get(ROOT_ENV)
        root = Path(explicit).resolve() if explicit else find_root(Path(os.getcwd()).resolve())
        if not root.is_dir():
            raise ConfigError(
                f"{ROOT_ENV}={explicit}: no such directory; point it at the repository root "
                "(or unset it to find the root from the current directory)"
            )
        runs_default, out_default = default_state_roots(root)
        return cls(
            root=root,
            runs_dir=_record_root(root, environ.get(RUNS_ENV), runs_default, RUNS_ENV),
            out_dir=_record_root(root, environ.get(OUT_ENV), out_default, OUT_ENV),
        )

    def make_state_dirs(self) -> None:
        """Create the state directories a run writes into, each ignoring itself for git
        (`layout.make_state_directory`); add the ignore file to those that lack it."""
        for directory in state_directories(self.root, self.runs_dir, self.out_dir):
            make_state_directory(directory)

    def display(self, path: Path) -> str:
        """Return ``path`` relative to the root when inside it, absolute otherwise."""
        text = str(path if path.is_absolute() else path.resolve())
        root = str(self.root)
        if text.startswith(root + os.sep):
            return text[len(root) + 1 :]
        return text

    def task_runs_dir(self, task_id: str) -> Path:
        """``<runs>/<task>``: holds ``cli/<run-id>/`` and ``metrics.json``."""
        return self._below(self.runs_dir, validate_id(task_id, "task"))

    def run_dir(self, task_id: str, run_id: str) -> Path:
        """``<runs>/<task>/cli/<run-id>``; its ``commands``/``errors`` may not be links."""
        relative = f"{validate_id(task_id, 'task')}/cli/{validate_id(run_id, 'run')}"
        run_dir = self._below(self.runs_dir, relative)
        for name in RUN_SUBDIRS:  # resume writes logs and error files into them
            if os.path.islink(run_dir / name):
                raise OutsideRootError(
                    f"{self.display(run_dir / name)} is a link; a run's records are written only "
                    "into its own directories — replace the link with a directory"
                )
        return run_dir

    def cli_dir(self, task_id: str) -> Path:
        """``<runs>/<task>/cli``: the parent of the task's run directories."""
        return self._below(self.runs_dir, f"{validate_id(task_id, 'task')}/cli")

    def state_dir(self, task_id: str) -> Path:
        """``<out>/<task>``: holds ``state.json``."""
        return self._below(self.out_dir, validate_id(task_id, "task"))

    def state_lock_path(self, task_id: str) -> Path:
        """``<runs>/<task>.lock``: the lock that serialises writers of the task's state.

        The lock file itself is opened without following a link (see `locks.FileLock`).
        """
        return self.runs_dir / f"{validate_id(task_id, 'task')}.lock"

    def find_run(self, run_id: str, task_id: str | None = None) -> tuple[str, Path] | None:
        """Locate a run by id under any task (or only ``task_id``); return (task, run dir)."""
        validate_id(run_id, "run")
        candidates = [task_id] if task_id else _list_dirs(self.runs_dir)
        for task in candidates:
            if (self.runs_dir / task / "cli" / run_id).is_dir():
                return task, self.run_dir(task, run_id)
        return None

    def _below(self, base: Path, relative: str) -> Path:
        """The real path of ``base/relative``, refused (exit 2) when a link leads out of ``base``."""
        return resolve_within(base / relative, base, self.display(base / relative), _RECORD_FIX)


def _record_root(root: Path, explicit: str | None, default: str, variable: str) -> Path:
    """A runs or out root as a real path; the default must stay inside the repository."""
    if explicit:
        return Path(os.path.realpath(root / explicit))
    fix = f"remove the link, or set {variable} to use that directory on purpose"
    return resolve_within(root / default, root, default, fix)


def resolve_task_id(explicit: str | None, env: Mapping[str, str] | None = None) -> str:
    """Task id from ``--task``, else ``MCP_RUNNER_TASK_ID``, else ``default``; validated."""
    environ = os.environ if env is None else env
    if explicit is not None:
        return validate_id(explicit, "task")
    from_env = environ.get(TASK_ENV, "").strip()
    if from_env:
        return validate_id(from_env, f"task (from {TASK_ENV})")
    return DEFAULT_TASK


def _list_dirs(directory: Path) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir())
    except OSError:
        return []
