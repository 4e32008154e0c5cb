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
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    alternate,
    bench_repo,
    cli_argv,
    fmt_seconds,
    median,
    progress,
)
from fig_capture import generator

SLOWDOWN_TARGET = 1.05


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
        self.frames: list[int] = []

    def _finish(self, mode: str, returncode: int, stderr: bytes) -> None:
        """Check the run, keep its stage duration, remove it (one run directory at a time)."""
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
            cli_argv("start"), cwd=self.repo.root, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, check=False,
        )
        elapsed = time.perf_counter() - started
        self._finish("off", done.returncode, done.stderr)
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
                cli_argv("start"), cwd=self.repo.root, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=terminal, check=False,
            )
        finally:
            os.close(terminal)
        elapsed = time.perf_counter() - started
        reader.join(timeout=10)
        os.close(controller)
        if b"\x1b[" not in screen:
            raise BenchError("the live view did not draw on the pseudo-terminal")
        self.frames.append(screen.count(b"\x1b[2K"))
        self._finish("on", done.returncode, bytes(screen))
        return elapsed


def measure(profile: Profile) -> list[Figure]:
    """Whole-CLI wall and stage duration, view off vs on."""
    size = profile.size_mb * 1_000_000
    with bench_repo("view") as repo:
        repo.write_config([{"id": "cap", "stages": [{"id": "gen", "command": generator("yes", size)}]}],
                          "cap")
        runs = _Runs(repo)
        runs.off()  # warm-up: bytecode and page caches
        runs.stage["off"].clear()
        progress(f"view: {profile.size_mb} MB stage, {profile.capture_rounds} alternating rounds "
                 "(stderr piped: view off; stderr on a pty: view on)")
        samples = alternate(profile.capture_rounds, [("off", runs.off), ("on", runs.on)])
    off, on = median(samples["off"]), median(samples["on"])
    stage_off, stage_on = median(runs.stage["off"]), median(runs.stage["on"])
    label = f"view on vs off, {profile.size_mb} MB stage"
    values = {"cli_off_s": samples["off"], "cli_on_s": samples["on"],
              "stage_off_s": runs.stage["off"], "stage_on_s": runs.stage["on"]}
    return [
        Figure(
            "view.stage", f"{label}: stage duration", fmt_seconds(stage_on),
            f"view off {fmt_seconds(stage_off)}", f"{stage_on / stage_off:.3f}x",
            f"<= {SLOWDOWN_TARGET}x", stage_on / stage_off <= SLOWDOWN_TARGET, values,
            note=f"median of {profile.capture_rounds} alternating runs; the view wrote "
                 f"~{median([float(f) for f in runs.frames]):.0f} erase-line codes a run",
        ),
        Figure(
            "view.cli", f"{label}: whole CLI wall", fmt_seconds(on),
            f"view off {fmt_seconds(off)}", f"{(on - off) * 1000:+.0f} ms ({on / off:.3f}x)",
            "(information)", None, {"cli_off_median_s": off, "cli_on_median_s": on},
            note="a fixed cost per run, not per byte: importing rich (~60 ms alone) and the "
                 "final table; the stage itself is the figure with a target",
        ),
    ]
