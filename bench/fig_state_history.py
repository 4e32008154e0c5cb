"""State history: the cost of recording run 10,000 against run 10, from bench_state_history.py.

That script (its own author's) times `TaskStateStore.record` for a small and a large history,
alternating, and measures lock waits of concurrent writers; this module runs it as a
subprocess and turns its output into rows.
"""

from __future__ import annotations

import re

from _harness import (
    BENCH_DIR,
    PYTHON,
    Figure,
    Profile,
    bench_env,
    describe_failure,
    failed,
    progress,
    timed_run,
    unavailable,
)

SCRIPT = BENCH_DIR / "bench_state_history.py"
RATIO_TARGET = 1.5
LABEL = "state history: record run 10,000 vs run 10"
TARGET = f"<= {RATIO_TARGET}x"
RECORD = re.compile(
    r"run 10 = (?P<small>[\d.]+) ms, run 10000 = (?P<large>[\d.]+) ms, ratio = (?P<ratio>[\d.]+)"
)
LOCKS = re.compile(r"^lock wait.*$", re.MULTILINE)


def measure(profile: Profile) -> list[Figure]:
    """The state-history row (and the lock-wait line as a note), or a 'not available' row."""
    if not SCRIPT.is_file():
        return [unavailable("state.history", LABEL, TARGET, f"{SCRIPT.name} is not there yet")]
    progress(f"state history: {SCRIPT.name} {profile.state_writers} {profile.state_rounds}")
    argv = [PYTHON, str(SCRIPT), str(profile.state_writers), str(profile.state_rounds)]
    _, completed = timed_run(
        argv, env=bench_env(BENCH_DIR.parent), cwd=BENCH_DIR.parent, check=False
    )
    output = completed.stdout.decode("utf-8", "replace")
    if completed.returncode != 0:
        return [failed("state.history", LABEL, TARGET, describe_failure(argv, completed))]
    match = RECORD.search(output)
    if match is None:
        return [
            failed(
                "state.history",
                LABEL,
                TARGET,
                f"unrecognised output of {SCRIPT.name}: {output.strip()[:300]}",
            )
        ]
    small, large, ratio = (float(match.group(name)) for name in ("small", "large", "ratio"))
    locks = LOCKS.search(output)
    return [
        Figure(
            "state.history",
            LABEL,
            f"{large:.2f} ms",
            f"run 10: {small:.2f} ms",
            f"{ratio:.2f}x",
            TARGET,
            ratio <= RATIO_TARGET,
            {"run_10_ms": small, "run_10000_ms": large, "ratio": ratio, "output": output.strip()},
            note=(
                f"median of {profile.state_rounds} alternating records each (its own script)"
                + (f"; {locks.group(0)}" if locks else "")
            ),
        )
    ]
