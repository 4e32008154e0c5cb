"""``codex-orchestrator logs RUN [STAGE]``: a run's stored stage output, byte for byte.

Stdout logs go to stdout and stderr logs to stderr, unchanged; headers (one per log when more
than one is printed) go to stderr. ``--follow`` polls the files and the manifest, prints new
bytes within a poll slice (50 ms), and exits with the run's own code once it has ended. A poll
lists each run's ``commands`` folder once (`StageFiles`) and opens only the logs of stages that
had not ended when last read: a log read to its end after its stage ended is complete, so a
poll costs the same however many stages have finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from codex_orchestrator.commands.invocation import require_run
from codex_orchestrator.errors import UsageError
from codex_orchestrator.records.manifest import (
    MANIFEST_NAME,
    MAX_CHILD_DEPTH,
    load_child_manifest,
    load_manifest,
)
from codex_orchestrator.records.stage_logs import (
    STREAMS,
    LogSource,
    StageFiles,
    fair_shares,
    open_log,
    read_from,
    stage_sources,
    tail_offset,
)
from codex_orchestrator.records.statuses import (
    DONE_STAGE_STATUSES,
    TERMINAL_RUN_STATUSES,
    StageStatus,
    run_exit_code,
)
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.numeric import parse_count
from codex_orchestrator.util.terminal_text import neutralise

#: Stage statuses after which a stage's logs no longer grow (while the run lives).
_SETTLED = frozenset({*DONE_STAGE_STATUSES, StageStatus.FAILED})
FOLLOW_POLL_SECONDS = 0.05
MANIFEST_POLL_SECONDS = 0.2
JSON_TEXT_LIMIT = 1 << 20


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Print the logs; with ``--follow``, until the run ends (then exit with its code)."""
    workspace = Workspace.from_env()
    stage = validate_id(args.stage, "stage") if args.stage else None
    tail = _parse_tail(args.tail)
    budget = parse_count(args.max_bytes, "--max-bytes") if args.max_bytes is not None else None
    if args.follow and reporter.json:
        raise UsageError("--follow prints bytes as they come; use it without --format json")
    _, run_dir = require_run(workspace, args.run_id, args.task)
    streams = STREAMS if args.stream == "both" else (args.stream,)
    view = LogView(workspace, run_dir, stage, streams)
    manifest = view.manifest()
    view.check_stage(manifest)
    if reporter.json:
        sources = view.sources(manifest)
        reporter.result(_document(manifest, sources, tail, budget, workspace.display), "")
        return 0
    if args.follow:
        return view.follow(tail)
    view.print_once(view.sources(manifest), tail)
    return 0


def _parse_tail(text: str | None) -> int | None:
    return None if text is None else parse_count(text, "--tail")


class LogView:
    """The logs of one run (and its child runs), printed once or followed."""

    def __init__(
        self, workspace: Workspace, run_dir: Path, stage: str | None, streams: tuple[str, ...]
    ) -> None:
        self.workspace = workspace
        self.run_dir = run_dir
        self.stage = stage
        self.streams = streams
        self._offsets: dict[Path, int] = {}
        self._current: LogSource | None = None
        self._headers = True

    def manifest(self) -> dict[str, Any]:
        """The run's manifest (exit 2 when it cannot be read)."""
        path = self.run_dir / MANIFEST_NAME
        return load_manifest(path, self.workspace.display(path))

    def check_stage(self, manifest: dict[str, Any]) -> None:
        """Refuse a STAGE the run does not have; decide whether headers are printed."""
        if self.stage is None:
            return
        entries = _matching(manifest["commands"], self.stage)
        if not entries:
            ids = ", ".join(str(c["id"]) for c in manifest["commands"])
            raise UsageError(
                f"run {manifest['run_id']} has no stage {self.stage!r}; its stages: {ids}"
            )
        entry = entries[0]
        attempts = entry.get("attempts")
        self._headers = entry.get("kind") == "subpipeline" or (
            isinstance(attempts, int) and attempts > 1
        )

    def sources(self, manifest: dict[str, Any]) -> list[LogSource]:
        """Every log of the selected stages, in stage order; child runs' logs in place."""
        return [source for source, _ in self._sources(self.run_dir, manifest, self.stage, 0)]

    def _sources(
        self, run_dir: Path, manifest: dict[str, Any], stage: str | None, depth: int
    ) -> Iterator[tuple[LogSource, bool]]:
        """Each log, and whether its stage had ended in the manifest read before it."""
        entries = manifest["commands"] if stage is None else _matching(manifest["commands"], stage)
        files = StageFiles.listing(run_dir / "commands")
        for entry in entries:
            child = entry.get("sub_run_id")
            if entry.get("kind") == "subpipeline" and isinstance(child, str):
                if depth < MAX_CHILD_DEPTH:
                    yield from self._child_sources(run_dir, manifest, child, depth)
                continue
            ended = entry.get("status") in _SETTLED
            for source in stage_sources(run_dir, manifest, entry, self.streams, files):
                yield source, ended

    def _child_sources(
        self, run_dir: Path, manifest: dict[str, Any], child: str, depth: int
    ) -> Iterator[tuple[LogSource, bool]]:
        found = load_child_manifest(
            self.workspace, child, str(manifest["task_id"]), "its logs are skipped"
        )
        if found is not None:  # an unreadable child manifest hides only the child's logs
            yield from self._sources(found[0], found[1], None, depth + 1)

    def print_once(self, sources: list[LogSource], tail: int | None) -> None:
        """Print each log completely (or its last ``tail`` lines)."""
        for source in sources:
            fd = open_log(source)
            if fd is None:
                continue
            try:
                start = tail_offset(fd, tail) if tail is not None else 0
                self._header(source)
                self._emit(source, read_from(fd, start))
            finally:
                os.close(fd)

    def follow(self, tail: int | None) -> int:
        """Print what exists, then new bytes as they are written, until the run ends."""
        manifest = self.manifest()
        first = True
        complete: set[Path] = set()  # logs read to their end after their stage ended
        next_manifest = time.monotonic() + MANIFEST_POLL_SECONDS
        while True:
            ended = manifest["status"] in TERMINAL_RUN_STATUSES
            for source, stage_ended in self._sources(self.run_dir, manifest, self.stage, 0):
                if source.path not in complete:
                    self._follow_one(source, tail if first else None)
                    if stage_ended:
                        complete.add(source.path)
            first = False
            if ended:
                return run_exit_code(manifest["status"], manifest.get("status_detail"))
            if self._dead(manifest):
                # The run may have ended, and let its driver lock go, since the last read.
                manifest = self.manifest()
                if manifest["status"] in TERMINAL_RUN_STATUSES:
                    continue
                note(
                    f"run {manifest['run_id']} is no longer progressing (stale); resume it with: "
                    f"codex-orchestrator resume {manifest['run_id']}"
                )
                return 1
            time.sleep(FOLLOW_POLL_SECONDS)
            if time.monotonic() >= next_manifest:
                manifest = self.manifest()
                next_manifest = time.monotonic() + MANIFEST_POLL_SECONDS

    def _dead(self, manifest: dict[str, Any]) -> bool:
        from codex_orchestrator.records.liveness import assess

        liveness = assess(self.run_dir, manifest)
        return liveness.stale or liveness.orchestrator_gone

    def _follow_one(self, source: LogSource, tail: int | None) -> None:
        fd = open_log(source)
        if fd is None:
            return
        try:
            offset = self._offsets.get(source.path)
            if offset is None:
                offset = tail_offset(fd, tail) if tail is not None else 0
            size = os.fstat(fd).st_size
            if size < offset:  # rewritten from the start (a new attempt reusing the name)
                offset = 0
            if size > offset:
                self._emit(source, read_from(fd, offset, size - offset))
            self._offsets[source.path] = size
        finally:
            os.close(fd)

    def _emit(self, source: LogSource, chunks: Iterator[bytes]) -> None:
        out: BinaryIO = sys.stdout.buffer if source.stream == "stdout" else sys.stderr.buffer
        for chunk in chunks:
            self._header(source)
            out.write(chunk)
        out.flush()

    def _header(self, source: LogSource) -> None:
        """A header on stderr when output switches to another log (if headers are on)."""
        if self._headers and self._current != source:
            sys.stdout.buffer.flush()
            label = neutralise(source.label, keep_newlines=False)
            sys.stderr.buffer.write(f"==> {label} <==\n".encode())
            sys.stderr.buffer.flush()
            self._current = source


def _matching(commands: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    by_id = [entry for entry in commands if entry["id"] == stage]
    if by_id or not stage.isdigit():
        return by_id
    return [entry for entry in commands if entry["index"] == int(stage)]


def _document(
    manifest: dict[str, Any],
    sources: list[LogSource],
    tail: int | None,
    budget: int | None,
    display: Any,
) -> dict[str, Any]:
    """``logs --format json``: each log's size and the tail of its text, each at most
    `JSON_TEXT_LIMIT` bytes and, with ``budget`` (``--max-bytes``), at most that many bytes
    in all, shared fairly (`fair_shares`)."""
    spans: list[tuple[LogSource, int, int]] = []  # source, size, where its requested text starts
    for source in sources:
        fd = open_log(source)
        if fd is None:
            continue
        try:
            size = os.fstat(fd).st_size
            spans.append((source, size, tail_offset(fd, tail) if tail is not None else 0))
        finally:
            os.close(fd)
    wanted = [size - requested for _, size, requested in spans]
    shares = fair_shares(wanted, budget) if budget is not None else wanted
    logs = []
    for (source, size, requested), share in zip(spans, shares, strict=True):
        fd = open_log(source)
        if fd is None:
            continue
        try:
            start = max(requested, size - min(share, JSON_TEXT_LIMIT))
            data = b"".join(read_from(fd, start, size - start))
        finally:
            os.close(fd)
        logs.append(
            {
                "run_id": source.run_id,
                "index": source.stage_index,
                "stage_id": source.stage_id,
                "attempt": source.attempt,
                "stream": source.stream,
                "path": display(source.path),
                "size_bytes": size,
                "text": data.decode("utf-8", errors="replace"),
                "truncated": start > requested,
            }
        )
    return {"run_id": manifest["run_id"], "status": manifest["status"], "logs": logs}
