"""Choosing the executor of a run: ``local`` (default) or ``dask`` (see docs/executors.md).

Each source is tried in turn: the command-line flag, then the environment, then (``resume``)
the choice the resumed run recorded, then the config's ``settings``. The Dask executor's
module is imported only when it is chosen, and Dask itself only when it connects, so local
runs never pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.executors.base import Executor
from codex_orchestrator.pipelines.config import PASS_ENV_SETTING
from codex_orchestrator.records.workspace import Settings, Workspace

EXECUTOR_ENV = "CODEX_ORCHESTRATOR_EXECUTOR"
SCHEDULER_ENV = "CODEX_ORCHESTRATOR_DASK_SCHEDULER"
EXECUTOR_NAMES = ("local", "dask")
#: Unless ``settings.dask_link_timeout_seconds`` says otherwise, a remote stage's link silent
#: (no output, no keep-alive) for this share of the stale threshold is lost; keep-alives come
#: twice a second each way.
LOST_SHARE_OF_STALE = 1 / 3
MIN_LOST_AFTER_SECONDS = 2.0


class Choice(NamedTuple):
    """A setting's value and where it came from (for error messages)."""

    value: str | None
    source: str


class Recorded(NamedTuple):
    """The executor a resumed run recorded (manifest ``executor``, ``executor_options``)."""

    run_id: str
    executor: str | None
    scheduler: str | None

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> Recorded:
        """What ``manifest`` records; fields that are missing or not strings count as unset."""
        options = manifest.get("executor_options")
        scheduler = options.get("scheduler") if isinstance(options, dict) else None
        executor = manifest.get("executor")
        return cls(
            str(manifest.get("run_id")),
            executor if isinstance(executor, str) else None,
            scheduler if isinstance(scheduler, str) else None,
        )


def pick(
    flag: str | None,
    flag_name: str,
    env_name: str,
    recorded: str | None,
    recorded_name: str,
    setting: str,
    settings: Mapping[str, object],
    env: Mapping[str, str],
) -> Choice:
    """The value of one executor setting: flag, else environment, else the resumed run's
    record, else config setting."""
    if flag is not None:
        return Choice(flag, flag_name)
    if env.get(env_name, "").strip():
        return Choice(env[env_name].strip(), f"environment variable {env_name}")
    if recorded is not None:
        return Choice(recorded, recorded_name)
    value = settings.get(setting)
    return Choice(str(value) if value is not None else None, f"settings.{setting}")


def chosen_executor(
    executor_flag: str | None,
    scheduler_flag: str | None,
    config_settings: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    recorded: Recorded | None = None,
) -> Choice:
    """Which executor the flags, the environment, the resumed run's record (``recorded``) or
    the config choose (None: the default local one), before anything connects."""
    environ = os.environ if env is None else env
    record = recorded or Recorded("", None, None)
    of_run = f"the executor run {record.run_id} recorded (override it with --executor)"
    if scheduler_flag is not None and executor_flag is None:
        executor_flag = "dask"  # --scheduler names a Dask scheduler: it implies the executor
    elif scheduler_flag is not None and executor_flag != "dask":
        raise OrchestratorError(
            f"--scheduler {scheduler_flag} names a Dask scheduler, but --executor is "
            f"{executor_flag!r}; drop --scheduler, or use --executor dask",
            exit_code=EXIT_USAGE,
        )
    return pick(
        executor_flag,
        "--executor",
        EXECUTOR_ENV,
        record.executor,
        of_run,
        "executor",
        config_settings,
        environ,
    )


def executor_for(
    executor_flag: str | None,
    scheduler_flag: str | None,
    workspace: Workspace,
    config_settings: Mapping[str, object],
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    detached: bool = False,
    recorded: Recorded | None = None,
) -> Executor | None:
    """Build the chosen executor (None: the default local one), or exit 2 with the fix.

    ``recorded``: the choice of the run being resumed. ``detached`` (``--detach``): everything
    is checked here, without importing Dask, and the client connects in the detached process
    (a Dask client's threads do not survive the fork).
    """
    environ = os.environ if env is None else env
    record = recorded or Recorded("", None, None)
    name = chosen_executor(executor_flag, scheduler_flag, config_settings, environ, record)
    if name.value is None or name.value == "local":
        return None
    if name.value != "dask":
        raise OrchestratorError(
            f"{name.source}: unknown executor {name.value!r}; choose one of "
            f"{', '.join(EXECUTOR_NAMES)}",
            exit_code=EXIT_USAGE,
        )
    scheduler = pick(
        scheduler_flag,
        "--scheduler",
        SCHEDULER_ENV,
        record.scheduler,
        f"the scheduler run {record.run_id} recorded (override it with --scheduler)",
        "dask_scheduler",
        config_settings,
        environ,
    )
    if scheduler.value is None:
        raise OrchestratorError(
            f"the dask executor needs a scheduler address: pass --scheduler tcp://HOST:PORT, or "
            f"set {SCHEDULER_ENV} or settings.dask_scheduler",
            exit_code=EXIT_USAGE,
        )
    from codex_orchestrator.executors.dask.client import (
        DaskConfig,
        WorkerMapping,
        connect,
        connect_after_fork,
    )
    from codex_orchestrator.executors.dask.connect import tls_files

    link_timeout = settings.dask_link_timeout_seconds or max(
        MIN_LOST_AFTER_SECONDS, settings.heartbeat_stale_after_seconds * LOST_SHARE_OF_STALE
    )
    config = DaskConfig(
        address=scheduler.value,
        source=scheduler.source,
        mapping=WorkerMapping(workspace.root, _worker_root(config_settings, workspace)),
        grace_seconds=settings.kill_grace_seconds,
        link_timeout=link_timeout,
        connect_timeout=settings.dask_connect_timeout_seconds,
        pass_env=tuple(config_settings.get(PASS_ENV_SETTING) or ()),  # type: ignore[arg-type]
        tls=tls_files(config_settings, workspace.root),
    )
    return connect_after_fork(config) if detached else connect(config)


def _worker_root(config_settings: Mapping[str, object], workspace: Workspace) -> Path:
    """Where the repository lives on the workers: ``settings.worker_root``, else the same path."""
    value = config_settings.get("worker_root")
    if value is None:
        return workspace.root
    root = Path(str(value))
    if not root.is_absolute():
        raise OrchestratorError(
            f"settings.worker_root: {value!r} is not an absolute path; give the repository's "
            "absolute path on the workers",
            exit_code=EXIT_USAGE,
        )
    return root
