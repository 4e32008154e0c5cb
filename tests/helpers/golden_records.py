"""Snapshots of what runs leave on disk, normalised so that two runs of the same scenario agree.

`snapshot` walks a repository's runs and out roots and renders, as one text, the list of every
file (names only) and the bytes of each record people and tools read: manifests, event logs,
run summaries, error files, stage logs, cancel requests, metrics lines, the task state. Only
what differs between two runs of the same scenario is replaced, in the text as written (key
order, indentation and separators stay exactly as the writer left them):

- run ids become ``<RUN-n>``, numbered parent first, then its child runs in manifest order;
- times become ``<TIME>``, resume-token hashes ``<TOKEN>``, addresses ``tcp://<ADDR>``;
- pids, process groups, start ticks, durations, heartbeat counters, hosts and Dask stage marks
  become ``<N>``, ``"<HOST>"`` or ``"<MARK>"`` (by field name);
- the repository root, the Python that runs the CLI and the package version become
  ``<ROOT>``, ``<PYBIN>`` and ``<VERSION>``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from codex_orchestrator import __version__

RUN_ID = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z-[0-9a-f]{8}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TOKEN = re.compile(r"sha256:[0-9a-f]{64}")
ADDRESS = re.compile(r"(tcp|tls)://[0-9.]+:\d+")
#: Fields whose number differs from run to run (processes, clocks, counters of the heartbeat).
VARYING_NUMBERS = (
    "pid",
    "pgid",
    "pid_start_ticks",
    "start_ticks",
    "orchestrator_pid",
    "orchestrator_start_ticks",
    "worker_pid",
    "supervisor_pid",
    "duration_seconds",
    "durationSeconds",
    "ticks",
    "manifest_writes",
    "manifest_writes_total",
    "lost_after",
    # A log's size follows the paths its stage prints (the root, the interpreter), which differ
    # from one machine to another; the log's normalised content is compared instead.
    "stdout_bytes",
    "stderr_bytes",
)
NUMBER_FIELD = re.compile(r'("(?:' + "|".join(VARYING_NUMBERS) + r')":\s*)-?[0-9][0-9.eE+-]*')
HOST_FIELD = re.compile(r'("host":\s*)"[^"]*"')
#: A Dask stage's random mark (it tells its process group apart from any other).
MARK_FIELD = re.compile(r'("stage_mark":\s*)"[0-9a-f]*"')
#: Files listed by name only: their content is a time, a random token, or a lock holder.
NAME_ONLY = {".heartbeat", ".resume-token", ".driver.lock", ".cancel.lock", ".state.json.stamp"}
NAME_ONLY_SUFFIXES = (".html", ".lock")


def run_order(runs_root: Path, first: str) -> list[str]:
    """Run ids, parent first, then its child runs (each followed by its own), as recorded."""
    order: list[str] = []
    pending = [first]
    while pending:
        run_id = pending.pop(0)
        if run_id in order:
            continue
        order.append(run_id)
        for manifest in runs_root.glob(f"*/cli/{run_id}/manifest.json"):
            links = json.loads(manifest.read_text()).get("child_runs", [])
            pending.extend(link["run_id"] for link in links)
    return order


def normalise(text: str, root: Path, run_ids: list[str]) -> str:
    """``text`` with everything that differs from one run to the next replaced."""
    for path in {str(root), os.path.realpath(root)}:
        text = text.replace(path, "<ROOT>")
    for path in {str(Path(sys.executable).parent), os.path.realpath(Path(sys.executable).parent)}:
        text = text.replace(path, "<PYBIN>")
    numbers = {run_id: n for n, run_id in enumerate(run_ids, start=1)}

    def run_name(match: re.Match[str]) -> str:
        number = numbers.setdefault(match.group(0), len(numbers) + 1)
        return f"<RUN-{number}>"

    text = RUN_ID.sub(run_name, text)
    text = TIME.sub("<TIME>", text)
    text = TOKEN.sub("sha256:<TOKEN>", text)
    text = ADDRESS.sub(r"\1://<ADDR>", text)
    text = NUMBER_FIELD.sub(r"\1<N>", text)
    text = HOST_FIELD.sub(r'\1"<HOST>"', text)
    text = MARK_FIELD.sub(r'\1"<MARK>"', text)
    return text.replace(__version__, "<VERSION>")


def snapshot(root: Path, first_run: str) -> str:
    """The normalised listing and records of every run and task state under ``root``."""
    runs_root, out_root = root / ".runs", root / "out"
    order = run_order(runs_root, first_run)
    files = sorted(
        path
        for base in (runs_root, out_root)
        if base.exists()
        for path in base.rglob("*")
        if path.is_file() or path.is_symlink()
    )
    listing = sorted(normalise(str(path.relative_to(root)), root, order) for path in files)
    sections = ["## files", *listing]
    contents = []
    for path in files:
        if path.name in NAME_ONLY or path.name.endswith(NAME_ONLY_SUFFIXES):
            continue
        name = normalise(str(path.relative_to(root)), root, order)
        body = normalise(path.read_bytes().decode("utf-8", "replace"), root, order)
        contents.append((name, body))
    for name, body in sorted(contents):
        sections += [f"## {name}", body + "<EOF>"]
    return "\n".join(sections) + "\n"
