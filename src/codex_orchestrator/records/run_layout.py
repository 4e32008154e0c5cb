"""The layout of a run directory: where each file a run leaves lives, named in one place.

```
<run>/manifest.json                          the manifest (records/manifest)
<run>/.heartbeat                             time of the last heartbeat
<run>/.resume-token                          the resume token (mode 0600)
<run>/runner.ndjson                          lifecycle events (records/events)
<run>/run-summary.json                       the outcome, written at the end
<run>/.driver.lock                           the driver's lock (records/driver)
<run>/cancel-request.json, .cancel.lock      cancel requests and their lock
<run>/review.md, report.html                 written by ``review`` and the report
<run>/orchestrator.log                       a detached driver's own output
<run>/commands/NN-<id>[.attempt-N].stdout.log (and .stderr.log)   a stage's output
<run>/errors/NN-<id>.json                    a failed stage's error file
```

``NN`` is the stage's 1-based index, zero-padded to the width of the stage count (at least
two digits). Every writer and reader of a run directory takes its paths from `RunLayout`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

MANIFEST_NAME = "manifest.json"
HEARTBEAT_NAME = ".heartbeat"
RESUME_TOKEN_NAME = ".resume-token"
EVENTS_NAME = "runner.ndjson"
RUN_SUMMARY_NAME = "run-summary.json"
DRIVER_LOCK_NAME = ".driver.lock"
REQUEST_NAME = "cancel-request.json"
REQUEST_LOCK_NAME = ".cancel.lock"
REVIEW_NAME = "review.md"
REPORT_NAME = "report.html"
ORCHESTRATOR_LOG_NAME = "orchestrator.log"
COMMANDS_DIR_NAME = "commands"
ERRORS_DIR_NAME = "errors"
#: The run's folders that later writers (``resume``) write into.
RUN_SUBDIRS = (COMMANDS_DIR_NAME, ERRORS_DIR_NAME)


#: What follows ``NN-<id>`` in a log's name.
_LOG_SUFFIX = re.compile(r"(?:\.attempt-([1-9][0-9]{0,3}))?\.(stdout|stderr)\.log")


def log_stem(index: int, stage_id: str, stage_count: int) -> str:
    """``NN-<id>``, NN zero-padded to the width of the stage count (at least 2)."""
    return f"{index:0{max(2, len(str(stage_count)))}d}-{stage_id}"


class StageLogName(NamedTuple):
    """What a stage log's name says: which attempt, which stream."""

    attempt: int
    stream: str


def stage_log_name(name: str, stem: str) -> StageLogName | None:
    """The attempt and stream of the log called ``name`` of the stage whose stem is ``stem``
    (`log_stem`); None when ``name`` is no log of that stage."""
    match = _LOG_SUFFIX.fullmatch(name, len(stem)) if name.startswith(stem) else None
    if match is None:
        return None
    return StageLogName(int(match.group(1) or 1), match.group(2))


class StageLogs(NamedTuple):
    """The two log files of one attempt of a stage."""

    stdout: Path
    stderr: Path


class RunLayout(NamedTuple):
    """The paths of one run directory."""

    run_dir: Path

    @property
    def manifest(self) -> Path:
        """``manifest.json``."""
        return self.run_dir / MANIFEST_NAME

    @property
    def heartbeat(self) -> Path:
        """``.heartbeat``."""
        return self.run_dir / HEARTBEAT_NAME

    @property
    def resume_token(self) -> Path:
        """``.resume-token``."""
        return self.run_dir / RESUME_TOKEN_NAME

    @property
    def events(self) -> Path:
        """``runner.ndjson``."""
        return self.run_dir / EVENTS_NAME

    @property
    def run_summary(self) -> Path:
        """``run-summary.json``."""
        return self.run_dir / RUN_SUMMARY_NAME

    @property
    def driver_lock(self) -> Path:
        """``.driver.lock``."""
        return self.run_dir / DRIVER_LOCK_NAME

    @property
    def cancel_request(self) -> Path:
        """``cancel-request.json``."""
        return self.run_dir / REQUEST_NAME

    @property
    def cancel_lock(self) -> Path:
        """``.cancel.lock``."""
        return self.run_dir / REQUEST_LOCK_NAME

    @property
    def review(self) -> Path:
        """``review.md``."""
        return self.run_dir / REVIEW_NAME

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.run_dir / REPORT_NAME

    @property
    def orchestrator_log(self) -> Path:
        """``orchestrator.log``."""
        return self.run_dir / ORCHESTRATOR_LOG_NAME

    @property
    def commands_dir(self) -> Path:
        """``commands/``: the stages' logs."""
        return self.run_dir / COMMANDS_DIR_NAME

    @property
    def errors_dir(self) -> Path:
        """``errors/``: the failed stages' error files."""
        return self.run_dir / ERRORS_DIR_NAME

    def stage_logs(self, index: int, stage_id: str, stage_count: int, attempt: int) -> StageLogs:
        """The logs of attempt ``attempt`` of stage ``index`` (the first attempt's have no
        ``.attempt-N``, so that a run never resumed keeps the plain names)."""
        stem = log_stem(index, stage_id, stage_count)
        if attempt > 1:
            stem += f".attempt-{attempt}"
        return StageLogs(
            self.commands_dir / f"{stem}.stdout.log", self.commands_dir / f"{stem}.stderr.log"
        )

    def error_file(self, index: int, stage_id: str, stage_count: int) -> Path:
        """The error file of stage ``index``."""
        return self.errors_dir / f"{log_stem(index, stage_id, stage_count)}.json"
