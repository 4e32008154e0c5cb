"""The write order of a finished run: metrics line, terminal manifest, state snapshot.

Each step is durable before the next starts, and a failure of one never stops the others: the
manifest records whether the metrics line got written, and a state snapshot that cannot be
merged now stays pending on disk until the next writer of the task merges it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import LockTimeoutError
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.util.jsonio import append_line, json_text
from codex_orchestrator.util.safefs import real_directory


class PersistenceCoordinator:
    """Writes a finished run's records in a safe order: metrics line, terminal manifest, state."""

    def __init__(
        self, store: TaskStateStore, metrics_path: Path, warn: Callable[[str], None]
    ) -> None:
        self.store = store
        self.metrics_path = metrics_path
        self._warn = warn

    def finish_run(
        self,
        *,
        metrics: dict[str, Any],
        write_manifest: Callable[[bool], None],
        record: RunRecord,
    ) -> bool:
        """Write the metrics line, the manifest, then the state snapshot.

        ``write_manifest(metrics_recorded)`` writes the terminal manifest durably. I/O failures
        are warned about, never raised. Returns True when the snapshot is in ``state.json`` now,
        False when it was deferred or could not be saved.
        """
        metrics_recorded = self._append_metrics(metrics, record)
        try:
            write_manifest(metrics_recorded)
        except OSError as error:
            self._warn(f"{_prefix(record)}: terminal manifest not written ({_reason(error)})")
        return self._record_state(record)

    def _append_metrics(self, metrics: dict[str, Any], record: RunRecord) -> bool:
        try:
            real_directory(self.metrics_path.parent)
            line = json_text(metrics, pretty=False)
            append_line(self.metrics_path, line, durable=True)
        except OSError as error:
            self._warn(
                f"{_prefix(record)}: metrics line not written to {self.metrics_path} "
                f"({_reason(error)})"
            )
            return False
        return True

    def _record_state(self, record: RunRecord) -> bool:
        try:
            self.store.record(record)
        except (LockTimeoutError, OSError) as error:
            pending = self.store.saved_snapshot(record)
            if pending is not None:
                self._warn(_deferred(record, error, pending))
            else:
                self._warn(f"{_prefix(record)}: state snapshot not saved ({_reason(error)})")
            return False
        return True


def _deferred(record: RunRecord, error: BaseException, pending: Path) -> str:
    return (
        f"{_prefix(record)}: state snapshot deferred ({_reason(error)}); "
        f"it stays in {pending} and is merged by the next writer or reader of the task"
    )


def _prefix(record: RunRecord) -> str:
    return f"warning: task {record.task_id} run {record.run_id}"


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        target = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{target}"
    return str(error)
