"""Capture speed with the live view on (stderr on a pseudo-terminal) and off (stderr piped).

The stage prints ``size_mb`` MB as fast as it can (``yes | head -c``, the worst case for any
per-byte cost). With stderr on a pty the live view draws (rich, ~8 frames a second, reading
only the tails of the logs); with stderr on a pipe it is off, as today. Runs alternate off / on;
the figures are the medians of the whole-CLI wall time and of the stage's own duration (the
manifest's ``duration_seconds``). Target: the view slows the stage by at most 5%.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
import threading
import time

from _harness import (
    PYTHON,
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    alternate,
    bench_repo,
    fmt_seconds,
    median,
    progress,
    timed_run,
)
from fig_capture import generator

SLOWDOWN_TARGET = 1.05
CPU_TARGET = 0.05
CPU_MARKER = "BENCH_ORCHESTRATOR_CPU_S="
#: The CLI run in-process, then the orchestrator's own CPU time (all its threads, the view's
#: included; never the stage's processes) printed on stdout. rich is imported first in both
#: modes, so the difference on vs off is the drawing alone; the import is its own figure.
IN_PROCESS = (
    "import resource, sys\n"
    "import rich.console, rich.live\n"
    "from codex_orchestrator.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    f"print('{CPU_MARKER}%f' % (usage.ru_utime + usage.ru_stime), flush=True)\n"
    "sys.exit(code)\n"
)


def _drain(fd: int, sink: bytearray) -> None:
    """Read the terminal until every writer is gone (EIO), as a terminal emulator would."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        sink += chunk


class _Runs:
    """One-stage runs of the generator with the view off (piped) and on (pty)."""

    def __init__(self, repo: BenchRepo) -> None:
        self.repo = repo
        self.env = {k: v for k, v in repo.env.items() if k not in ("CI", "NO_COLOR")}
        self.env["TERM"] = "xterm-256color"
        self.stage: dict[str, list[float]] = {"off": [], "on": []}
        self.cpu: dict[str, list[float]] = {"off": [], "on": []}
        self.frames: list[int] = []

    def _finish(self, mode: str, returncode: int, stderr: bytes, stdout: bytes) -> None:
        """Check the run, keep its stage duration and CPU, remove it (one run at a time)."""
        marker = stdout.decode().rpartition(CPU_MARKER)[2].split()
        if not marker:
            raise BenchError(f"view {mode}: no CPU figure in {stdout[-200:]!r}")
        self.cpu[mode].append(float(marker[0]))
        [run_dir] = list((self.repo.root / ".runs/default/cli").iterdir())
        manifest = json.loads((run_dir / "manifest.json").read_bytes())
        if returncode != 0 or manifest["status"] != "succeeded":
            raise BenchError(f"view {mode}: run ended {returncode}: {stderr[-300:]!r}")
        self.stage[mode].append(float(manifest["commands"][0]["duration_seconds"]))
        shutil.rmtree(run_dir)

    def off(self) -> float:
        """Stderr piped: the view is off (plain lines)."""
        os.sync()  # untimed: no run pays for the write-back of the one before it
        started = time.perf_counter()
        done = subprocess.run(
            [PYTHON, "-c", IN_PROCESS, "start"],
            cwd=self.repo.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        self._finish("off", done.returncode, done.stderr, done.stdout)
        return elapsed

    def on(self) -> float:
        """Stderr on a pseudo-terminal that a thread drains: the view draws."""
        os.sync()
        controller, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        screen = bytearray()
        reader = threading.Thread(target=_drain, args=(controller, screen), daemon=True)
        reader.start()
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [PYTHON, "-c", IN_PROCESS, "start"],
                cwd=self.repo.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=terminal,
                check=False,
            )
        finally:
            os.close(terminal)
        elapsed = time.perf_counter() - started
        reader.join(timeout=10)
        os.close(controller)
        if b"\x1b[" not in screen:
            raise BenchError("the live view did not draw on the pseudo-terminal")
        self.frames.append(screen.count(b"\x1b[2K"))
        self._finish("on", done.returncode, bytes(screen), done.stdout)
        return elapsed


def _import_cost(repo: BenchRepo, rounds: int) -> Figure:
    """Wall time of importing what the view needs, against a bare interpreter start."""

    def run(program: str) -> float:
        return timed_run([PYTHON, "-c", program], env=repo.env, cwd=repo.root)[0]

    samples = alternate(
        rounds,
        [("bare", lambda: run("pass")), ("rich", lambda: run("import rich.console, rich.live"))],
    )
    bare, rich = median(samples["bare"]), median(samples["rich"])
    return Figure(
        "view.import",
        "view: importing rich (once per run on a terminal)",
        f"{(rich - bare) * 1000:.0f} ms",
        f"python -c pass {bare * 1000:.0f} ms",
        "",
        "(information)",
        None,
        {"bare_s": samples["bare"], "rich_s": samples["rich"]},
        note="paid only when the view is on; plan, status and piped runs never import rich",
    )


def measure(profile: Profile) -> list[Figure]:
    """The view's CPU and the stage duration, view off vs on; the rich import."""
    size = profile.size_mb * 1_000_000
    with bench_repo("view") as repo:
        repo.write_config(
            [{"id": "cap", "stages": [{"id": "gen", "command": generator("yes", size)}]}], "cap"
        )
        runs = _Runs(repo)
        runs.off()  # warm-up: bytecode and page caches
        runs.stage["off"].clear()
        runs.cpu["off"].clear()
        progress(
            f"view: {profile.size_mb} MB stage, {profile.capture_rounds} alternating rounds "
            "(stderr piped: view off; stderr on a pty: view on)"
        )
        samples = alternate(profile.capture_rounds, [("off", runs.off), ("on", runs.on)])
        import_cost = _import_cost(repo, profile.cold_rounds)
    off, on = median(samples["off"]), median(samples["on"])
    stage_off, stage_on = median(runs.stage["off"]), median(runs.stage["on"])
    cpu_off, cpu_on = median(runs.cpu["off"]), median(runs.cpu["on"])
    extra = (cpu_on - cpu_off) / stage_on
    label = f"view on vs off, {profile.size_mb} MB stage"
    values = {
        "cli_off_s": samples["off"],
        "cli_on_s": samples["on"],
        "stage_off_s": runs.stage["off"],
        "stage_on_s": runs.stage["on"],
        "cpu_off_s": runs.cpu["off"],
        "cpu_on_s": runs.cpu["on"],
    }
    rounds = f"median of {profile.capture_rounds} alternating runs"
    return [
        Figure(
            "view.cpu",
            f"{label}: view's CPU while the stage runs",
            f"{extra * 100:.1f}% of a core",
            f"orchestrator CPU off {cpu_off * 1000:.0f} ms, on {cpu_on * 1000:.0f} ms",
            f"+{(cpu_on - cpu_off) * 1000:.0f} ms over a {fmt_seconds(stage_on)} stage",
            f"<= {CPU_TARGET * 100:.0f}% of a core",
            extra <= CPU_TARGET,
            values,
            note=f"{rounds}; the orchestrator's own CPU time (getrusage: its threads, not the "
            "stage's processes): the most the view can take from a stage is this share of "
            "one core",
        ),
        Figure(
            "view.stage",
            f"{label}: stage duration",
            fmt_seconds(stage_on),
            f"view off {fmt_seconds(stage_off)}",
            f"{stage_on / stage_off:.3f}x",
            f"<= {SLOWDOWN_TARGET}x",
            stage_on / stage_off <= SLOWDOWN_TARGET,
            values,
            note=f"{rounds}; wall time, as noisy as the machine (load average in the header); "
            f"the view wrote ~{median([float(f) for f in runs.frames]):.0f} erase-line "
            "codes a run",
        ),
        Figure(
            "view.cli",
            f"{label}: whole CLI wall",
            fmt_seconds(on),
            f"view off {fmt_seconds(off)}",
            f"{(on - off) * 1000:+.0f} ms ({on / off:.3f}x)",
            "(information)",
            None,
            {"cli_off_median_s": off, "cli_on_median_s": on},
            note="both runs import rich first (see the import row)",
        ),
        import_cost,
    ]
