"""Resilience (SPEC section 7): teardown on signals and timeouts, SIGKILL at random moments,
the error-file bound, and the heartbeat's cadence.

Every orchestrated figure is a whole ``python -m codex_orchestrator`` child process in a temp
repo (one task id per run, so each run's files are its own):

- ``sigterm``: a cooperative stage (``sleep 300``) is running; SIGTERM to the orchestrator;
  measured = signal to exit. Baseline: the same command as a bare ``/bin/sh -c`` process group
  that gets SIGTERM by ``killpg``, timed until no process of the group is left. Checks: exit
  143, manifest ``cancelled`` / ``signal:SIGTERM``, no live process of the stage's group.
- ``ignore-term``: the stage ignores SIGTERM (``sleep`` children inherit the ignore), with
  ``settings.kill_grace_seconds`` = 1; baseline: bare ``killpg`` SIGTERM, the grace, SIGKILL.
- ``timeout``: ``timeoutSeconds: 0.5`` on ``sleep 300``; measured = wall of the whole
  ``start``; baseline = wall of a one-stage ``true`` run (so start-up is not counted as
  teardown). Checks: exit 1, ``stage:<id>:timeout``, no survivor of the group.
- ``sigkill``: SIGKILL of ``start`` at K moments spread (stratified, seeded) over the life of a
  run of short stages, from its first manifest to its natural end; then every ``*.json`` and
  ``*.ndjson`` file of the task parses, ``status`` exits 0 and flags an unfinished run, and
  ``resume`` (dead-pid detection, no staleness override) ends ``succeeded`` with no survivor
  of the stage groups the killed run recorded.
- ``error-file``: a failing stage prints 50 MB of random bytes on stdout and random bytes,
  control bytes and a long line on stderr; the error file's size on disk (target 10,240 B)
  and the logs' size against the bytes the same command writes to files under ``/bin/sh``.
- ``heartbeat``: a stage sleeping S s with a 0.1 s heartbeat and a 1 s manifest throttle
  (runs in parallel, one task each); the ``heartbeat_stats`` event of ``runner.ndjson``.

Process survivors are found by scanning ``/proc`` for the recorded process group id (zombies
aside: they run nothing and are reaped by their new parent).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    bench_repo,
    cli_argv,
    describe_failure,
    failed,
    fmt_seconds,
    median,
    progress,
    timed_run,
)
from codex_orchestrator.procfs import live_group_members

GRACE_SECONDS = 1.0
TIMEOUT_SECONDS = 0.5
SETTLE_SECONDS = 0.05
COOPERATIVE = "sleep 300"
IGNORES_TERM = 'trap "" TERM; while :; do sleep 1; done'
CHAIN_STAGES = 8
CHAIN_STAGE = "sleep 0.04"
NOISE_STDOUT_BYTES = 50_000_000
NOISE_STDERR_BYTES = 200_000
ERROR_FILE_TARGET = 10_240
HEARTBEAT_INTERVAL = 0.1
MANIFEST_THROTTLE = 1.0
KILL_SEED = 20260101
STALE_OVERRIDE_SECONDS = 1.0
EXIT_SIGTERM = 128 + int(signal.SIGTERM)

NOISE_COMMAND = (
    f"head -c {NOISE_STDOUT_BYTES} /dev/urandom; "
    f"head -c {NOISE_STDERR_BYTES} /dev/urandom >&2; "
    "printf 'FATAL \\033[31mred\\033[0m \\000\\001\\002\\007\\010\\r\\t bell\\n' >&2; "
    "i=0; while [ $i -lt 200 ]; do printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; "
    "i=$((i+1)); done; printf '\\nlast line: boom\\n' >&2; exit 1"
)


@dataclass(frozen=True)
class _Plan:
    """Rounds and sizes of one profile (full or quick)."""

    signal_rounds: int
    grace_rounds: int
    timeout_rounds: int
    kills: int
    noise_rounds: int
    heartbeat_runs: int
    heartbeat_seconds: float


def _plan(profile: Profile) -> _Plan:
    if profile.quick:
        return _Plan(3, 2, 3, 4, 2, 2, 3.0)
    return _Plan(5, 3, 5, 10, 3, 3, 6.0)


def _pipelines(plan: _Plan) -> list[dict[str, Any]]:
    return [
        {"id": "one", "stages": [{"id": "noop", "command": "true"}]},
        {"id": "cooperative", "stages": [{"id": "wait", "command": COOPERATIVE}]},
        {"id": "stubborn", "stages": [{"id": "stubborn", "command": IGNORES_TERM}]},
        {
            "id": "slow",
            "stages": [{"id": "slow", "command": COOPERATIVE, "timeoutSeconds": TIMEOUT_SECONDS}],
        },
        {
            "id": "chain",
            "stages": [
                {"id": f"c{index:02d}", "command": CHAIN_STAGE}
                for index in range(1, CHAIN_STAGES + 1)
            ],
        },
        {"id": "noisy", "stages": [{"id": "noisy", "command": NOISE_COMMAND}]},
        {"id": "beat", "stages": [{"id": "beat", "command": f"sleep {plan.heartbeat_seconds:g}"}]},
    ]


def _write_config(repo: BenchRepo, plan: _Plan) -> None:
    config = {
        "defaultPipeline": "one",
        "settings": {"kill_grace_seconds": GRACE_SECONDS},
        "pipelines": _pipelines(plan),
    }
    (repo.root / "codex.orchestrator.json").write_text(json.dumps(config, indent=2))


# --- processes --------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    return live_group_members(pgid) or []


def _wait_group_gone(pgid: int, limit: float = 10.0) -> None:
    deadline = time.perf_counter() + limit
    while group_members(pgid):
        if time.perf_counter() > deadline:
            raise BenchError(f"process group {pgid} still alive after {limit:g} s")
        time.sleep(0.001)


def _kill_group_quietly(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _bare_teardown(command: str, grace: float | None) -> float:
    """SIGTERM (then, after ``grace``, SIGKILL) to a bare ``sh -c`` group: seconds until gone."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        time.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        if grace is not None:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_group_gone(proc.pid)
        return time.perf_counter() - started
    finally:
        _kill_group_quietly(proc.pid)
        proc.wait()


def _spawn(
    repo: BenchRepo,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli_argv(*args),
        env=dict(env or repo.env),
        cwd=repo.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _task_dirs(repo: BenchRepo, task: str) -> tuple[Path, Path]:
    """The task's runs directory and out directory."""
    return repo.root / ".runs" / task, repo.root / "out" / task


def _find_manifest(repo: BenchRepo, task: str) -> Path | None:
    found = sorted((repo.root / ".runs" / task / "cli").glob("*/manifest.json"))
    return found[0] if found else None


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_bytes())
    return document


def _wait_stage_running(
    repo: BenchRepo, task: str, proc: subprocess.Popen[bytes], limit: float = 20.0
) -> tuple[Path, int]:
    """Poll until the run's first stage is running with a recorded pgid; (manifest, pgid)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise BenchError(
                f"orchestrator exited {proc.returncode} before its stage ran: "
                f"{err[-400:].decode('utf-8', 'replace')}"
            )
        path = _find_manifest(repo, task)
        if path is not None:
            command = _load(path)["commands"][0]
            if command.get("status") == "running" and isinstance(command.get("pgid"), int):
                return path, int(command["pgid"])
        time.sleep(0.003)
    raise BenchError(f"stage of task {task} not running after {limit:g} s")


@dataclass
class _Teardown:
    """Samples of one signal-teardown figure."""

    seconds: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    orphans: int = 0
    exit_codes: list[int] = field(default_factory=list)


def _signal_round(repo: BenchRepo, pipeline: str, task: str, result: _Teardown) -> None:
    """Start ``pipeline``; once its stage runs, SIGTERM the orchestrator and time its exit."""
    proc = _spawn(repo, "start", pipeline, "--task", task, "--format", "json")
    pgid = -1
    try:
        manifest_path, pgid = _wait_stage_running(repo, task, proc)
        time.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        result.seconds.append(time.perf_counter() - started)
        survivors = group_members(pgid)
        result.orphans += len(survivors)
        result.exit_codes.append(proc.returncode)
        manifest = _load(manifest_path)
        if proc.returncode != EXIT_SIGTERM:
            result.problems.append(f"{task}: exit {proc.returncode}")
        if (manifest.get("status"), manifest.get("status_detail")) != (
            "cancelled",
            "signal:SIGTERM",
        ):
            result.problems.append(
                f"{task}: manifest {manifest.get('status')} ({manifest.get('status_detail')})"
            )
        if manifest["commands"][0].get("status") != "failed":
            result.problems.append(f"{task}: stage {manifest['commands'][0].get('status')}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pgid > 0:
            _kill_group_quietly(pgid)


def _teardown_samples(
    repo: BenchRepo, pipeline: str, command: str, grace: float | None, rounds: int
) -> _Teardown:
    result = _Teardown()
    for index in range(rounds):
        result.baseline.append(_bare_teardown(command, grace))
        _signal_round(repo, pipeline, f"{pipeline}-{index}", result)
    return result


def _checks_text(result: _Teardown, expected_exit: int) -> str:
    codes = sorted(set(result.exit_codes))
    exits = "exit " + ",".join(str(code) for code in codes) if codes else "no exit"
    state = "cancelled" if not any("manifest" in p for p in result.problems) else "NOT cancelled"
    return f"{exits}, {state}, orphans = {result.orphans}" + (
        "" if codes == [expected_exit] else f" (expected {expected_exit})"
    )


def _sigterm_figure(repo: BenchRepo, plan: _Plan) -> Figure:
    progress(f"resilience: SIGTERM teardown, cooperative stage, {plan.signal_rounds} rounds")
    result = _teardown_samples(repo, "cooperative", COOPERATIVE, None, plan.signal_rounds)
    measured, base = median(result.seconds), median(result.baseline)
    ok = not result.problems and result.orphans == 0
    return Figure(
        "resilience.sigterm",
        "SIGTERM teardown (cooperative stage)",
        fmt_seconds(measured),
        f"bare killpg TERM {fmt_seconds(base)}",
        f"+{fmt_seconds(measured - base)}; {_checks_text(result, EXIT_SIGTERM)}",
        "exit 143, cancelled, orphans = 0",
        ok,
        {
            "signal_to_exit_s": result.seconds,
            "bare_killpg_s": result.baseline,
            "orphans": result.orphans,
            "exit_codes": result.exit_codes,
            "problems": result.problems,
        },
        note=(
            f"stage `{COOPERATIVE}`; SIGTERM to `start` -> its exit (final manifest, metrics, "
            f"state included); median of {plan.signal_rounds}; no time target in the spec"
            + (f"; problems: {'; '.join(result.problems)}" if result.problems else "")
        ),
    )


def _grace_figure(repo: BenchRepo, plan: _Plan) -> Figure:
    progress(
        f"resilience: SIGTERM teardown, stage ignores TERM (grace {GRACE_SECONDS:g} s), "
        f"{plan.grace_rounds} rounds"
    )
    result = _teardown_samples(repo, "stubborn", IGNORES_TERM, GRACE_SECONDS, plan.grace_rounds)
    measured, base = median(result.seconds), median(result.baseline)
    ok = not result.problems and result.orphans == 0
    return Figure(
        "resilience.sigterm_ignored",
        f"SIGTERM teardown (stage ignores TERM, grace {GRACE_SECONDS:g} s)",
        fmt_seconds(measured),
        f"bare TERM+grace+KILL {fmt_seconds(base)}",
        f"grace +{fmt_seconds(measured - GRACE_SECONDS)}; {_checks_text(result, EXIT_SIGTERM)}",
        "exit 143, cancelled, orphans = 0",
        ok,
        {
            "signal_to_exit_s": result.seconds,
            "bare_term_grace_kill_s": result.baseline,
            "grace_s": GRACE_SECONDS,
            "orphans": result.orphans,
            "exit_codes": result.exit_codes,
            "problems": result.problems,
        },
        note=(
            f"stage `{IGNORES_TERM}` with settings.kill_grace_seconds = {GRACE_SECONDS:g}; "
            f"median of {plan.grace_rounds}; expected about grace + a little"
            + (f"; problems: {'; '.join(result.problems)}" if result.problems else "")
        ),
    )


def _timeout_figure(repo: BenchRepo, plan: _Plan) -> Figure:
    progress(
        f"resilience: timeoutSeconds {TIMEOUT_SECONDS:g} on `{COOPERATIVE}`, "
        f"{plan.timeout_rounds} rounds"
    )
    walls: list[float] = []
    baseline: list[float] = []
    problems: list[str] = []
    orphans = 0
    for index in range(plan.timeout_rounds):
        elapsed, answer = repo.start("one", "--task", f"one-{index}")
        if answer.get("status") != "succeeded":
            raise BenchError(f"one-stage run ended {answer.get('status')}")
        baseline.append(elapsed)
        task = f"slow-{index}"
        argv = cli_argv("start", "slow", "--task", task, "--format", "json")
        elapsed, completed = timed_run(argv, env=repo.env, cwd=repo.root, check=False)
        walls.append(elapsed)
        path = _find_manifest(repo, task)
        if path is None:
            raise BenchError(describe_failure(argv, completed))
        manifest = _load(path)
        pgid = manifest["commands"][0].get("pgid")
        if isinstance(pgid, int):
            orphans += len(group_members(pgid))
            _kill_group_quietly(pgid)
        if completed.returncode != 1:
            problems.append(f"{task}: exit {completed.returncode}")
        if (
            manifest.get("status_detail") != "stage:slow:timeout"
            or manifest.get("status") != "failed"
        ):
            problems.append(f"{task}: {manifest.get('status')} ({manifest.get('status_detail')})")
    wall, base = median(walls), median(baseline)
    ok = not problems and orphans == 0
    return Figure(
        "resilience.timeout",
        f"timeout teardown (timeoutSeconds {TIMEOUT_SECONDS:g})",
        fmt_seconds(wall),
        f"1-stage `true` run {fmt_seconds(base)}",
        f"timeout +{fmt_seconds(wall - base - TIMEOUT_SECONDS)} beyond start-up; "
        f"{'exit 1, stage:slow:timeout' if not problems else 'WRONG RESULT'}, orphans = {orphans}",
        "exit 1, stage:<id>:timeout, orphans = 0",
        ok,
        {
            "start_wall_s": walls,
            "true_run_wall_s": baseline,
            "timeout_s": TIMEOUT_SECONDS,
            "orphans": orphans,
            "problems": problems,
        },
        note=(
            f"wall of the whole `start` of a `{COOPERATIVE}` stage with timeoutSeconds "
            f"{TIMEOUT_SECONDS:g}, median of {plan.timeout_rounds}; overhead = wall - "
            "timeout - wall of a one-stage `true` run"
            + (f"; problems: {'; '.join(problems)}" if problems else "")
        ),
    )


# --- SIGKILL at random moments ----------------------------------------------------------------


def unparseable_json(*roots: Path) -> tuple[list[str], int]:
    """Files under ``roots`` named ``*.json`` / ``*.ndjson`` that do not parse; temp files left."""
    bad: list[str] = []
    temps = 0
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath, name)
                if name.endswith(".tmp"):
                    temps += 1
                    continue
                if not name.endswith((".json", ".ndjson")):
                    continue
                data = path.read_bytes()
                try:
                    if name.endswith(".ndjson") or name == "metrics.json":
                        for line in data.splitlines():
                            if line.strip():
                                json.loads(line)
                    else:
                        json.loads(data)
                except ValueError:
                    bad.append(str(path.relative_to(root.parent)))
    return bad, temps


def _run_life(repo: BenchRepo, task: str) -> tuple[float, float]:
    """A whole `chain` run: seconds from spawn to its first manifest, and to its exit."""
    started = time.perf_counter()
    proc = _spawn(repo, "start", "chain", "--task", task, "--format", "json")
    while _find_manifest(repo, task) is None and proc.poll() is None:
        time.sleep(0.001)
    appeared = time.perf_counter() - started
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"reference chain run exited {proc.returncode}: {err[-300:]!r}")
    return appeared, time.perf_counter() - started


@dataclass
class _KillTrial:
    """What one SIGKILL left behind and how it recovered."""

    delay_s: float
    status_at_kill: str
    unparseable: list[str]
    temps: int
    status_exit: int
    flagged: bool
    resume_exit: int
    resumed_status: str
    orphans_after_resume: int
    resume_s: float
    resumed_via: str

    @property
    def ok(self) -> bool:
        return (
            not self.unparseable
            and self.status_exit == 0
            and self.resume_exit == 0
            and self.resumed_status == "succeeded"
            and self.orphans_after_resume == 0
        )


def _kill_trial(repo: BenchRepo, task: str, delay: float) -> _KillTrial:
    proc = _spawn(repo, "start", "chain", "--task", task, "--format", "json")
    deadline = time.perf_counter() + 20
    while (path := _find_manifest(repo, task)) is None:
        if proc.poll() is not None or time.perf_counter() > deadline:
            raise BenchError(f"{task}: no manifest appeared (exit {proc.poll()})")
        time.sleep(0.001)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate()
    runs_dir, out_dir = _task_dirs(repo, task)
    bad, temps = unparseable_json(runs_dir, out_dir)
    try:
        manifest = _load(path)
    except ValueError:
        manifest = {"status": "unparseable", "commands": []}
    groups = [entry["pgid"] for entry in manifest["commands"] if isinstance(entry.get("pgid"), int)]
    run_id = path.parent.name
    _, status = timed_run(
        cli_argv("status", run_id, "--format", "json"), env=repo.env, cwd=repo.root, check=False
    )
    flagged = False
    if status.returncode == 0:
        document = json.loads(status.stdout)
        flagged = bool(document.get("stale") or document.get("hint"))
    resume_s, resumed = timed_run(
        cli_argv("resume", run_id, "--format", "json"), env=repo.env, cwd=repo.root, check=False
    )
    via = "dead-pid"
    if resumed.returncode == 2 and b"still alive" in resumed.stderr + resumed.stdout:
        # no proof of death (e.g. killed before the pid was recorded): wait out a short
        # staleness threshold, as a user would wait out the default one
        via = "stale-override"
        time.sleep(STALE_OVERRIDE_SECONDS + 0.1)
        env = {
            **repo.env,
            "CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS": str(STALE_OVERRIDE_SECONDS),
        }
        resume_s, resumed = timed_run(
            cli_argv("resume", run_id, "--format", "json"), env=env, cwd=repo.root, check=False
        )
    try:
        resumed_status = str(json.loads(resumed.stdout).get("status"))
    except ValueError:
        resumed_status = f"no JSON answer: {describe_failure(['resume', run_id], resumed)}"
    orphans = sum(len(group_members(pgid)) for pgid in groups)
    for pgid in groups:
        _kill_group_quietly(pgid)
    bad_after, _ = unparseable_json(runs_dir, out_dir)
    return _KillTrial(
        delay,
        str(manifest.get("status")),
        bad + bad_after,
        temps,
        status.returncode,
        flagged,
        resumed.returncode,
        resumed_status,
        orphans,
        resume_s,
        via,
    )


def _sigkill_figure(repo: BenchRepo, plan: _Plan) -> Figure:
    progress(
        f"resilience: SIGKILL at {plan.kills} moments of a {CHAIN_STAGES}-stage run, "
        "then status + resume"
    )
    lives = [_run_life(repo, f"life-{index}") for index in range(2)]
    window = median([end - appeared for appeared, end in lives])
    rng = random.Random(KILL_SEED)
    delays = [window * (index + rng.random()) / plan.kills for index in range(plan.kills)]
    rng.shuffle(delays)
    trials = [_kill_trial(repo, f"kill-{index}", delay) for index, delay in enumerate(delays)]
    good = sum(trial.ok for trial in trials)
    unparseable = sorted({name for trial in trials for name in trial.unparseable})
    unfinished = [
        trial
        for trial in trials
        if trial.status_at_kill not in ("succeeded", "failed", "cancelled")
    ]
    flagged = sum(trial.flagged for trial in unfinished)
    orphans = sum(trial.orphans_after_resume for trial in trials)
    overridden = sum(trial.resumed_via == "stale-override" for trial in trials)
    at_kill: dict[str, int] = {}
    for trial in trials:
        at_kill[trial.status_at_kill] = at_kill.get(trial.status_at_kill, 0) + 1
    failures = [
        f"kill at +{trial.delay_s * 1000:.0f} ms: status exit {trial.status_exit}, "
        f"resume exit {trial.resume_exit} -> {trial.resumed_status}, "
        f"orphans {trial.orphans_after_resume}, unparseable {trial.unparseable}"
        for trial in trials
        if not trial.ok
    ]
    return Figure(
        "resilience.sigkill",
        f"SIGKILL at {plan.kills} random moments, then resume",
        f"{good}/{plan.kills} resumed to success",
        f"run window {fmt_seconds(window)}",
        f"{len(unparseable)} unparseable files, status exit 0, orphans = {orphans}"
        if good == plan.kills
        else f"{len(unparseable)} unparseable files, {len(failures)} "
        f"trial(s) failed, orphans = {orphans}",
        f"{plan.kills}/{plan.kills}, 0 unparseable",
        good == plan.kills and not unparseable,
        {
            "delays_s": delays,
            "window_s": window,
            "status_at_kill": at_kill,
            "unparseable": unparseable,
            "temp_files_left": sum(t.temps for t in trials),
            "resume_wall_s": [t.resume_s for t in trials],
            "resumed_via": [t.resumed_via for t in trials],
            "status_flagged": flagged,
            "unfinished_at_kill": len(unfinished),
            "failures": failures,
        },
        note=(
            f"{CHAIN_STAGES} stages `{CHAIN_STAGE}`; kills stratified over the window from the "
            f"first manifest to the natural end (seed {KILL_SEED}); manifest at kill: "
            + ", ".join(f"{name} {count}" for name, count in sorted(at_kill.items()))
            + f"; temp files left by the kills: {sum(t.temps for t in trials)}; resume "
            f"accepted on dead-pid detection {len(trials) - overridden}/{len(trials)}, after "
            f"a {STALE_OVERRIDE_SECONDS:g} s staleness override {overridden}/{len(trials)} "
            f"(median resume {fmt_seconds(median([t.resume_s for t in trials]))}); status "
            f"flagged (stale or resume hint) {flagged}/{len(unfinished)} unfinished runs"
            + (f"; FAILURES: {'; '.join(failures)}" if failures else "")
        ),
    )


# --- error file bound -------------------------------------------------------------------------


def _noise_figures(repo: BenchRepo, plan: _Plan) -> list[Figure]:
    progress(
        f"resilience: error file of a stage printing {NOISE_STDOUT_BYTES // 1_000_000} MB "
        f"of binary, {plan.noise_rounds} rounds"
    )
    error_sizes: list[int] = []
    log_sizes: list[int] = []
    printed: list[int] = []
    problems: list[str] = []
    for index in range(plan.noise_rounds):
        out, err = repo.root / "noise.out", repo.root / "noise.err"
        script = f"{{ {NOISE_COMMAND}; }} > {shlex.quote(str(out))} 2> {shlex.quote(str(err))}"
        subprocess.run(["/bin/sh", "-c", script], check=False)
        printed.append(out.stat().st_size + err.stat().st_size)
        out.unlink()
        err.unlink()
        task = f"noisy-{index}"
        argv = cli_argv("start", "noisy", "--task", task, "--format", "json")
        _, completed = timed_run(argv, env=repo.env, cwd=repo.root, check=False)
        path = _find_manifest(repo, task)
        if path is None or completed.returncode != 1:
            raise BenchError(describe_failure(argv, completed))
        command = _load(path)["commands"][0]
        if not command.get("error_file"):
            raise BenchError(f"{task}: no error_file recorded")
        error_path = repo.root / command["error_file"]
        error_sizes.append(error_path.stat().st_size)
        details = _load(error_path).get("details", {})
        if not (details.get("stdout_truncated") and details.get("stderr_truncated")):
            problems.append(
                f"{task}: *_truncated flags {details.get('stdout_truncated')}/"
                f"{details.get('stderr_truncated')}"
            )
        logs = [
            repo.root / command[key] for key in ("log_path", "stderr_log_path") if command.get(key)
        ]
        log_sizes.append(sum(log.stat().st_size for log in logs))
        for log in logs:
            log.unlink()  # 50 MB a round: do not let the temp repo grow
    worst = max(error_sizes)
    ratios = [logged / wrote for logged, wrote in zip(log_sizes, printed, strict=True)]
    return [
        Figure(
            "resilience.error_file",
            "error file, stage printing 50 MB binary",
            f"{worst:,} B",
            f"printed {median(printed):,.0f} B",
            f"max of {len(error_sizes)}; {'truncation flagged' if not problems else 'FLAGS MISSING'}",
            f"<= {ERROR_FILE_TARGET:,} B",
            worst <= ERROR_FILE_TARGET and not problems,
            {"error_file_bytes": error_sizes, "bytes_printed": printed, "problems": problems},
            note=(
                "stdout: 50 MB of /dev/urandom; stderr: 200 KB of /dev/urandom, ANSI and "
                "control bytes (NUL, BEL, BS, CR), a 10,000-byte line; exit 1"
                + (f"; problems: {'; '.join(problems)}" if problems else "")
            ),
        ),
        Figure(
            "resilience.error_logs",
            "logs of that stage vs bytes printed",
            f"{median(log_sizes):,.0f} B",
            f"sh -c 'CMD >f 2>g' {median(printed):,.0f} B",
            f"{min(ratios):.6f}x..{max(ratios):.6f}x",
            "= printed (logs in full)",
            all(logged == wrote for logged, wrote in zip(log_sizes, printed, strict=True)),
            {"log_bytes": log_sizes, "bytes_printed": printed},
            note="stdout + stderr log sizes on disk against the same command redirected to "
            "files by /bin/sh, round by round",
        ),
    ]


# --- heartbeat --------------------------------------------------------------------------------


def _heartbeat_stats(run_dir: Path) -> dict[str, Any]:
    for line in (run_dir / "runner.ndjson").read_bytes().splitlines():
        if line.strip():
            event = json.loads(line)
            if event.get("event") == "heartbeat_stats":
                return dict(event)
    raise BenchError(f"no heartbeat_stats event in {run_dir / 'runner.ndjson'}")


def _heartbeat_figures(repo: BenchRepo, plan: _Plan) -> list[Figure]:
    seconds = plan.heartbeat_seconds
    progress(
        f"resilience: heartbeat, {plan.heartbeat_runs} parallel runs of a {seconds:g} s "
        f"stage (interval {HEARTBEAT_INTERVAL:g} s, throttle {MANIFEST_THROTTLE:g} s)"
    )
    env = dict(repo.env)
    env["CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS"] = str(HEARTBEAT_INTERVAL)
    env["CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS"] = str(MANIFEST_THROTTLE)
    tasks = [f"beat-{index}" for index in range(plan.heartbeat_runs)]
    procs = [
        _spawn(repo, "start", "beat", "--task", task, "--format", "json", env=env) for task in tasks
    ]
    ticks_pm: list[float] = []
    writes_pm: list[float] = []
    writes: list[int] = []
    failures: list[int] = []
    for task, proc in zip(tasks, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"heartbeat run {task} exited {proc.returncode}: {err[-300:]!r}")
        answer = json.loads(out)
        manifest = _load(repo.root / answer["manifest"])
        stats = _heartbeat_stats(repo.root / answer["artifact_root"])
        duration = float(manifest["duration_seconds"])
        ticks_pm.append(stats["ticks"] / duration * 60)
        writes_pm.append(stats["manifest_writes"] / duration * 60)
        writes.append(int(stats["manifest_writes"]))
        failures.append(int(stats["failures"]))
    max_writes = seconds / MANIFEST_THROTTLE + 1
    nominal_ticks = 60 / HEARTBEAT_INTERVAL
    nominal_writes = 60 / MANIFEST_THROTTLE
    values = {
        "ticks_per_min": ticks_pm,
        "manifest_writes_per_min": writes_pm,
        "manifest_writes": writes,
        "failures": failures,
        "stage_seconds": seconds,
        "interval_s": HEARTBEAT_INTERVAL,
        "throttle_s": MANIFEST_THROTTLE,
    }
    return [
        Figure(
            "resilience.heartbeat_ticks",
            f"heartbeat ticks/min (interval {HEARTBEAT_INTERVAL:g} s)",
            f"{median(ticks_pm):.0f}/min",
            f"nominal {nominal_ticks:.0f}/min",
            f"{median(ticks_pm) / nominal_ticks:.2f}x nominal, failures = {sum(failures)}",
            "",
            None,
            values,
            note=(
                f"heartbeat_stats of runner.ndjson over the run's duration_seconds; a {seconds:g} s "
                f"stage, median of {plan.heartbeat_runs} runs in parallel"
            ),
        ),
        Figure(
            "resilience.heartbeat_writes",
            f"heartbeat manifest writes/min (throttle {MANIFEST_THROTTLE:g} s)",
            f"{median(writes_pm):.1f}/min",
            f"throttle cap {nominal_writes:.0f}/min",
            f"max {max(writes)} writes in a {seconds:g} s stage, failures = {sum(failures)}",
            f"<= S/throttle + 1 = {max_writes:g}, 0 failures",
            max(writes) <= max_writes and sum(failures) == 0,
            values,
        ),
    ]


# --- entry point ------------------------------------------------------------------------------


def _guarded(
    name: str,
    label: str,
    target: str,
    step: Callable[[], Sequence[Figure]],
) -> list[Figure]:
    """Run one figure; a broken one becomes an ERROR row without hiding the others."""
    try:
        return list(step())
    except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
        progress(f"resilience: {label}: FAILED: {type(error).__name__}: {error}")
        return [failed(name, label, target, f"{type(error).__name__}: {error}")]


def measure(profile: Profile) -> list[Figure]:
    """Every resilience figure of SPEC section 7."""
    plan = _plan(profile)
    figures: list[Figure] = []
    with bench_repo("resilience") as repo:
        _write_config(repo, plan)
        steps: list[tuple[str, str, str, Callable[[], Sequence[Figure]]]] = [
            (
                "resilience.sigterm",
                "SIGTERM teardown (cooperative stage)",
                "exit 143, cancelled, orphans = 0",
                lambda: [_sigterm_figure(repo, plan)],
            ),
            (
                "resilience.sigterm_ignored",
                "SIGTERM teardown (stage ignores TERM)",
                "exit 143, cancelled, orphans = 0",
                lambda: [_grace_figure(repo, plan)],
            ),
            (
                "resilience.timeout",
                "timeout teardown",
                "exit 1, stage:<id>:timeout",
                lambda: [_timeout_figure(repo, plan)],
            ),
            (
                "resilience.sigkill",
                "SIGKILL at random moments, then resume",
                f"{plan.kills}/{plan.kills}, 0 unparseable",
                lambda: [_sigkill_figure(repo, plan)],
            ),
            (
                "resilience.error_file",
                "error file, stage printing 50 MB binary",
                f"<= {ERROR_FILE_TARGET:,} B",
                lambda: _noise_figures(repo, plan),
            ),
            (
                "resilience.heartbeat",
                "heartbeat cadence",
                "<= S/throttle + 1",
                lambda: _heartbeat_figures(repo, plan),
            ),
        ]
        for name, label, target, step in steps:
            figures += _guarded(name, label, target, step)
    return figures
