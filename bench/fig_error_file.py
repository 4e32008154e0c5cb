"""The error-file bound: a failing stage prints 50 MB of random bytes on stdout and random
bytes, control bytes and a long line on stderr.

Measured: the error file's size on disk (target 10,240 B), and the logs' size against the bytes
the same command writes to files under ``/bin/sh``.
"""

from __future__ import annotations

import shlex
import subprocess

from _harness import (
    BenchError,
    BenchRepo,
    Figure,
    cli_argv,
    describe_failure,
    median,
    progress,
    timed_run,
)
from _procs import find_manifest, load_json

NOISE_STDOUT_BYTES = 50_000_000
NOISE_STDERR_BYTES = 200_000
ERROR_FILE_TARGET = 10_240
NOISE_COMMAND = (
    f"head -c {NOISE_STDOUT_BYTES} /dev/urandom; "
    f"head -c {NOISE_STDERR_BYTES} /dev/urandom >&2; "
    "printf 'FATAL \\033[31mred\\033[0m \\000\\001\\002\\007\\010\\r\\t bell\\n' >&2; "
    "i=0; while [ $i -lt 200 ]; do printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; "
    "i=$((i+1)); done; printf '\\nlast line: boom\\n' >&2; exit 1"
)


def error_file_figures(repo: BenchRepo, *, pipeline: str, rounds: int) -> list[Figure]:
    """The error file and the logs of a stage printing 50 MB of binary, ``rounds`` times."""
    progress(
        f"resilience: error file of a stage printing {NOISE_STDOUT_BYTES // 1_000_000} MB "
        f"of binary, {rounds} rounds"
    )
    error_sizes: list[int] = []
    log_sizes: list[int] = []
    printed: list[int] = []
    problems: list[str] = []
    for index in range(rounds):
        out, err = repo.root / "noise.out", repo.root / "noise.err"
        script = f"{{ {NOISE_COMMAND}; }} > {shlex.quote(str(out))} 2> {shlex.quote(str(err))}"
        subprocess.run(["/bin/sh", "-c", script], check=False)
        printed.append(out.stat().st_size + err.stat().st_size)
        out.unlink()
        err.unlink()
        task = f"{pipeline}-{index}"
        argv = cli_argv("start", pipeline, "--task", task, "--format", "json")
        _, completed = timed_run(argv, env=repo.env, cwd=repo.root, check=False)
        path = find_manifest(repo, task)
        if path is None or completed.returncode != 1:
            raise BenchError(describe_failure(argv, completed))
        command = load_json(path)["commands"][0]
        if not command.get("error_file"):
            raise BenchError(f"{task}: no error_file recorded")
        error_path = repo.root / command["error_file"]
        error_sizes.append(error_path.stat().st_size)
        details = load_json(error_path).get("details", {})
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
    flagged = "truncation flagged" if not problems else "FLAGS MISSING"
    ratios = [logged / wrote for logged, wrote in zip(log_sizes, printed, strict=True)]
    return [
        Figure(
            key="resilience.error_file",
            label="error file, stage printing 50 MB binary",
            measured=f"{worst:,} B",
            baseline=f"printed {median(printed):,.0f} B",
            result=f"max of {len(error_sizes)}; {flagged}",
            target=f"<= {ERROR_FILE_TARGET:,} B",
            ok=worst <= ERROR_FILE_TARGET and not problems,
            values={
                "error_file_bytes": error_sizes,
                "bytes_printed": printed,
                "problems": problems,
            },
            note=(
                "stdout: 50 MB of /dev/urandom; stderr: 200 KB of /dev/urandom, ANSI and "
                "control bytes (NUL, BEL, BS, CR), a 10,000-byte line; exit 1"
                + (f"; problems: {'; '.join(problems)}" if problems else "")
            ),
        ),
        Figure(
            key="resilience.error_logs",
            label="logs of that stage vs bytes printed",
            measured=f"{median(log_sizes):,.0f} B",
            baseline=f"sh -c 'CMD >f 2>g' {median(printed):,.0f} B",
            result=f"{min(ratios):.6f}x..{max(ratios):.6f}x",
            target="= printed (logs in full)",
            ok=all(logged == wrote for logged, wrote in zip(log_sizes, printed, strict=True)),
            values={"log_bytes": log_sizes, "bytes_printed": printed},
            note="stdout + stderr log sizes on disk against the same command redirected to "
            "files by /bin/sh, round by round",
        ),
    ]
