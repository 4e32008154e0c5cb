"""Run control (docs/run-control.md): detach return time, `runs` over 100 x 1,000 runs,
`logs --follow` latency, `cancel --wait` time with no process left.

Baselines measured in the same run: a bare interpreter start (``python -c pass``) for the
command timings, ``tail -f`` on the same log file for the follow latency, and the configured
kill grace period for cancel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from _harness import (
    PYTHON,
    BenchRepo,
    Figure,
    Profile,
    bench_repo,
    cli_argv,
    fmt_seconds,
    median,
    progress,
    timed_run,
)

TASKS = 100
RUNS_PER_TASK = 1000
DETACH_TARGET_S = 0.5
RUNS_LIMIT_TARGET_S = 1.0
RUNS_ALL_TARGET_S = 3.0
FOLLOW_TARGET_S = 0.250
GRACE_S = 1.0
CANCEL_SLACK_S = 1.0
# Prints its own wall-clock time every 0.2 s, for the follow-latency readers to compare.
STAMPER = (
    '"$CODEX_ORCHESTRATOR_PYTHON" -c "import time,sys\n'
    "for _ in range({count}):\n"
    '    time.sleep(0.2); sys.stdout.write(repr(time.time()) + chr(10)); sys.stdout.flush()"'
)
# Ignores SIGTERM, so that cancel needs the whole grace period and then SIGKILL.
STUBBORN = "trap '' TERM; echo $$ > stage.pid; while :; do sleep 0.05; done"


def measure(profile: Profile) -> list[Figure]:
    """Every run-control figure."""
    rounds = 3 if profile.quick else 7
    with bench_repo("runctl") as repo:
        repo.write_config(
            [
                {"id": "quick", "stages": [{"id": "one", "command": "true"}]},
                {"id": "stamps", "stages": [{"id": "stamp", "command": STAMPER.format(count=15)}]},
                {"id": "stubborn", "stages": [{"id": "hold", "command": STUBBORN}]},
            ],
            "quick",
        )
        _settings(repo)
        bare = median([timed_run([PYTHON, "-c", "pass"], env=repo.env)[0] for _ in range(rounds)])
        figures = [_detach(repo, rounds, bare)]
        figures += _runs(repo, bare)
        figures.append(_follow(repo))
        figures.append(_cancel(repo, rounds))
    return figures


def _settings(repo: BenchRepo) -> None:
    config = json.loads((repo.root / "codex.orchestrator.json").read_text())
    config["settings"] = {"kill_grace_seconds": GRACE_S}
    (repo.root / "codex.orchestrator.json").write_text(json.dumps(config))


def _detach(repo: BenchRepo, rounds: int, bare: float) -> Figure:
    progress(f"runctl: start --detach x{rounds}")
    samples = []
    for _ in range(rounds):
        elapsed, completed = timed_run(
            cli_argv("start", "--task", "detach", "--detach", "--format", "json"),
            env=repo.env,
            cwd=repo.root,
        )
        samples.append(elapsed)
        _wait_ended(repo.root / json.loads(completed.stdout)["manifest"])
    value = median(samples)
    return Figure(
        "runctl.detach",
        "start --detach returns",
        fmt_seconds(value),
        f"python -c pass: {fmt_seconds(bare)}",
        f"{value / bare:.1f}x",
        f"< {DETACH_TARGET_S} s",
        value < DETACH_TARGET_S,
        {"seconds": samples, "bare_seconds": bare},
        note=f"median of {rounds}; each detached run is waited for before the next",
    )


def _runs(repo: BenchRepo, bare: float) -> list[Figure]:
    progress(f"runctl: writing {TASKS} task histories of {RUNS_PER_TASK} runs")
    _synthetic_histories(repo.root)
    rows = []
    for label, args, target, key in (
        (
            "runs --limit 20 (100 x 1,000 runs)",
            ("runs", "--limit", "20", "--format", "json"),
            RUNS_LIMIT_TARGET_S,
            "runctl.runs.limit",
        ),
        (
            "runs --format ndjson, all 100,000",
            ("runs", "--format", "ndjson", "--limit", "0"),
            RUNS_ALL_TARGET_S,
            "runctl.runs.all",
        ),
    ):
        samples = []
        for _ in range(3):
            elapsed, completed = timed_run(cli_argv(*args), env=repo.env, cwd=repo.root)
            samples.append(elapsed)
        count = (
            len(json.loads(completed.stdout)["runs"])
            if "json" in args
            else completed.stdout.count(b"\n")
        )
        value = median(samples)
        rows.append(
            Figure(
                key,
                label,
                fmt_seconds(value),
                f"python -c pass: {fmt_seconds(bare)}",
                f"{value / bare:.1f}x",
                f"< {target:g} s",
                value < target,
                {"seconds": samples, "rows": count},
                note=f"median of 3; {count} rows; histories in state.json + archive, 1 live run a task",
            )
        )
    return rows


def _synthetic_histories(root: Path) -> None:
    """100 tasks: 1,000 recorded runs each (750 in state.json, 250 archived), run directories
    for the newest 50, and one in-progress run whose orchestrator is gone."""
    base = time.time() - 10 * 86400
    for task_number in range(TASKS):
        task = f"task-{task_number:03d}"
        state_dir = root / "out" / task
        cli = root / ".runs" / task / "cli"
        state_dir.mkdir(parents=True)
        cli.mkdir(parents=True)
        entries = []
        for index in range(RUNS_PER_TASK):
            moment = base + index * 60 + task_number * 0.001
            run_id = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(moment)) + (
                f"-{int(moment * 1000) % 1000:03d}Z-{task_number:04x}{index:04x}"
            )
            entries.append(
                {
                    "taskId": task,
                    "runId": run_id,
                    "pipelineId": "diagnostics",
                    "status": "failed" if index % 7 == 0 else "succeeded",
                    "timestamp": _iso(moment + 30),
                    "manifest": f".runs/{task}/cli/{run_id}/manifest.json",
                    "startedAt": _iso(moment),
                    **({"statusDetail": "stage:test:failed"} if index % 7 == 0 else {}),
                }
            )
        archived, recent = entries[:250], entries[250:]
        (state_dir / "state.archive.ndjson").write_text(
            "".join(json.dumps(e) + "\n" for e in archived)
        )
        body = ",\n".join(json.dumps(e, separators=(",", ":")) for e in recent)
        (state_dir / "state.json").write_text(
            f'{{"taskId":"{task}","lastRunAt":"{recent[-1]["timestamp"]}","runs":[\n{body}\n]}}\n'
        )
        for entry in recent[-50:]:
            (cli / entry["runId"]).mkdir()
        live = time.strftime("%Y-%m-%dT%H-%M-%S-000Z", time.gmtime()) + f"-{task_number:04x}ffff"
        (cli / live).mkdir()
        (cli / live / "manifest.json").write_text(
            json.dumps(
                {
                    "run_id": live,
                    "task_id": task,
                    "pipeline_id": "diagnostics",
                    "status": "in_progress",
                    "started_at": _iso(time.time()),
                    "commands": [],
                    "heartbeat_at": _iso(time.time() - 600),
                    "host": os.uname().nodename,
                    "orchestrator_pid": 0,
                }
            )
        )


def _iso(moment: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        + f".{int(moment * 1000) % 1000:03d}Z"
    )


def _follow(repo: BenchRepo) -> Figure:
    progress("runctl: logs --follow latency against tail -f")
    _, completed = timed_run(
        cli_argv("start", "stamps", "--task", "follow", "--detach", "--format", "json"),
        env=repo.env,
        cwd=repo.root,
    )
    answer = json.loads(completed.stdout)
    log = repo.root / answer["artifact_root"] / "commands" / "01-stamp.stdout.log"
    readers = {"logs": cli_argv("logs", answer["run_id"], "--follow")}
    if shutil.which("tail"):
        readers["tail"] = ["tail", "-n", "+1", "-F", str(log)]
    procs = {
        name: subprocess.Popen(
            argv, cwd=repo.root, env=repo.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        for name, argv in readers.items()
    }
    latencies: dict[str, list[float]] = {name: [] for name in procs}
    try:
        import selectors

        selector = selectors.DefaultSelector()
        for name, proc in procs.items():
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            selector.register(proc.stdout, selectors.EVENT_READ, name)
        buffers = dict.fromkeys(procs, b"")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(map(len, latencies.values())) < 15:
            for key, _ in selector.select(timeout=0.5):
                chunk = key.fileobj.read()  # type: ignore[union-attr]
                now = time.time()
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffers[key.data] += chunk
                *lines, buffers[key.data] = buffers[key.data].split(b"\n")
                latencies[key.data] += [now - float(line) for line in lines if line.strip()]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait()
    ours = latencies["logs"][1:]  # the first line may predate the follower
    value = max(ours)
    baseline = latencies.get("tail", [])[1:]
    return Figure(
        "runctl.follow",
        "logs --follow: new bytes shown after",
        fmt_seconds(value),
        f"tail -F max: {fmt_seconds(max(baseline))}" if baseline else "tail not available",
        f"median {fmt_seconds(median(ours))}",
        f"< {FOLLOW_TARGET_S * 1000:.0f} ms",
        value < FOLLOW_TARGET_S,
        {"logs": ours, "tail": baseline},
        note=f"worst of {len(ours)} lines, each stamped with its write time by the stage",
    )


def _cancel(repo: BenchRepo, rounds: int) -> Figure:
    progress(f"runctl: cancel --wait x{rounds} (stage ignores SIGTERM, grace {GRACE_S:g} s)")
    samples, left = [], 0
    for _ in range(rounds):
        (repo.root / "stage.pid").unlink(missing_ok=True)
        _, completed = timed_run(
            cli_argv("start", "stubborn", "--task", "cancel", "--detach", "--format", "json"),
            env=repo.env,
            cwd=repo.root,
        )
        answer = json.loads(completed.stdout)
        manifest_path = repo.root / answer["manifest"]
        _wait_for(lambda: (repo.root / "stage.pid").exists())
        orchestrator = _read(manifest_path).get("orchestrator_pid")
        stage_pid = int((repo.root / "stage.pid").read_text())
        elapsed, _ = timed_run(
            cli_argv("cancel", answer["run_id"], "--wait"), env=repo.env, cwd=repo.root
        )
        samples.append(elapsed)
        time.sleep(0.2)
        left += sum(1 for pid in (orchestrator, stage_pid) if isinstance(pid, int) and _alive(pid))
        if _read(manifest_path).get("status") != "cancelled":
            left += 1
    value = max(samples)
    return Figure(
        "runctl.cancel",
        "cancel --wait, stage ignoring SIGTERM",
        fmt_seconds(value),
        f"grace {GRACE_S:g} s",
        f"{left} processes left",
        f"<= grace + {CANCEL_SLACK_S:g} s, 0 left",
        value <= GRACE_S + CANCEL_SLACK_S and left == 0,
        {"seconds": samples, "left": left},
        note=f"worst of {rounds} (whole CLI wall time, start-up included)",
    )


def _wait_ended(manifest: Path) -> None:
    _wait_for(lambda: _read(manifest).get("status") in ("succeeded", "failed", "cancelled"))


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not reached in time")
        time.sleep(0.02)


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
