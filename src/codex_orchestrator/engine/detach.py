"""``start --detach`` / ``resume --detach``: continue a validated, created run in the background.

The caller has validated everything and created (or reset) the run. `detach` forks: the child
becomes the leader of a new session (no controlling terminal, so a hang-up of the caller's
terminal never reaches it), reads ``/dev/null``, writes its own output to
``<run>/orchestrator.log``, drives the run through the same code as a foreground run, and
exits with the run's code. The parent prints what ``start`` prints and returns at once.
Forking (rather than starting a new interpreter) keeps the return well under half a second and
hands over the validated config as is. No thread is running at this point, so forking is safe:
the Dask executor, whose client runs threads, checks its scheduler before the fork without
importing Dask and connects in the child (``executors.dask.DetachedDaskExecutor``).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from codex_orchestrator.executors.process import become_child_subreaper
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.manifest import ManifestStore
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.safefs import UnreadableFileError, open_no_follow, remove_file
from codex_orchestrator.util.wording import logs_line


def detach(
    workspace: Workspace,
    reporter: Reporter,
    store: ManifestStore,
    drive: Callable[[], int],
) -> int:
    """Fork; the child runs ``drive()`` in a new session and exits with its code.

    The run's driver lock passes to the child (it records itself as the holder; the caller
    closes its descriptor without unlocking). Returns 0 in the caller once the child exists,
    after printing the run's document.
    """
    run_dir, run_id, status = store.run_dir, str(store.data["run_id"]), str(store.data["status"])
    driver: DriverLock | None = store.driver
    log_fd = _open_log(RunLayout(run_dir).orchestrator_log)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _become_daemon(log_fd)
        # A subreaper mark is not inherited across fork: take it again, so that processes a
        # stage leaves behind are adopted by this driver and ended with the run.
        become_child_subreaper()
        if driver is not None:
            driver.claim()
        code = 1
        try:
            code = drive()
        except BaseException:  # the child must never return into the caller's code path
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(log_fd)
    if driver is not None:
        driver.hand_over()
    document = {
        "run_id": run_id,
        "status": status,
        "detached": True,
        "pid": pid,
        "artifact_root": workspace.display(run_dir),
        "manifest": workspace.display(RunLayout(run_dir).manifest),
        "log_path": workspace.display(RunLayout(run_dir).events),
        "orchestrator_log": workspace.display(RunLayout(run_dir).orchestrator_log),
    }
    reporter.result(
        document,
        "\n".join(
            [
                f"run {run_id}: {status} (detached, pid {pid})",
                f"manifest: {document['manifest']}",
                logs_line(document["artifact_root"], run_id),
                f"orchestrator output: {document['orchestrator_log']}",
                f"follow it with: codex-orchestrator status --watch {run_id}",
            ]
        ),
    )
    return 0


def _open_log(path: Path) -> int:
    """``orchestrator.log`` for appending. A link or a FIFO planted in its place is neither
    followed nor waited on (`safefs.open_no_follow` refuses it): it is removed (the link
    itself, never its target) and a fresh file takes its name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        return open_no_follow(path, flags)
    except OSError as error:
        if error.errno != errno.ELOOP and not isinstance(error, UnreadableFileError):
            raise
        note(f"warning: {path.name} was {error.strerror}; replaced with a fresh file")
    remove_file(path)
    return open_no_follow(path, flags | os.O_EXCL)


def _become_daemon(log_fd: int) -> None:
    """New session, stdin from /dev/null, stdout and stderr to the run's orchestrator log."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for fd in (null, log_fd):
        if fd > 2:
            os.close(fd)
