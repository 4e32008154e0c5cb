"""A failing check's summary is the tool's own result line, not its last output line."""

from __future__ import annotations

import pytest

from codex_orchestrator.records.result_lines import result_line
from codex_orchestrator.records.summaries import stage_summary

# Output tails as the tools print them (the real tools run in tests/test_diagnostics_runs.py;
# these cover the ones that may be absent: eslint, go, jest, vitest, mypy, tsc).
SAMPLES = [
    (
        b"tests/test_a.py F.\n=========== short test summary info ===========\n"
        b"FAILED tests/test_a.py::test_x - assert 1 == 2\n"
        b"============== 3 failed, 120 passed, 2 skipped in 1.52s ==============\n",
        b"",
        "3 failed, 120 passed, 2 skipped in 1.52s",
    ),
    (
        b"ERROR: file or directory not found: nope\n\nno tests ran in 0.01s\n",
        b"",
        "no tests ran in 0.01s",
    ),
    (
        b"a.py:1:8: F401 [*] `os` imported but unused\nFound 6 errors.\n[*] 6 fixable with the `--fix` option.\n",
        b"",
        "Found 6 errors.",
    ),
    (
        b"src/a.py:3: error: Incompatible types\nFound 1 error in 1 file (checked 12 source files)\n",
        b"",
        "Found 1 error in 1 file (checked 12 source files)",
    ),
    (
        b"/repo/src/a.js\n  1:7  error  'x' is assigned a value but never used  no-unused-vars\n\n"
        b"\xe2\x9c\x96 12 problems (10 errors, 2 warnings)\n  2 errors and 0 warnings potentially fixable\n",
        b"",
        "✖ 12 problems (10 errors, 2 warnings)",
    ),
    (
        b"running 2 tests\ntest tests::ok ... ok\ntest tests::bad ... FAILED\n\n"
        b"test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\n",
        b"error: test failed, to rerun pass `--lib`\n",
        "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
    ),
    (
        b"",
        b"error[E0425]: cannot find value `missing`\n"
        b"error: could not compile `demo` (lib) due to 1 previous error\n"
        b"warning: build failed, waiting for other jobs to finish...\n",
        "error: could not compile `demo` (lib) due to 1 previous error",
    ),
    (
        b"--- FAIL: TestAdd (0.00s)\n    demo_test.go:6: wrong\nFAIL\nFAIL\texample.com/demo\t0.002s\nFAIL\n",
        b"",
        "FAIL\texample.com/demo\t0.002s",
    ),
    (
        b"Test Suites: 1 failed, 1 total\nTests:       1 failed, 3 passed, 4 total\nTime: 1 s\nRan all test suites.\n",
        b"",
        "Tests:       1 failed, 3 passed, 4 total",
    ),
    (
        b" Test Files  1 failed (1)\n      Tests  1 failed | 3 passed (4)\n   Start at  10:00:00\n",
        b"",
        "Tests  1 failed | 3 passed (4)",
    ),
    (
        b"py: commands[0]> pytest -q\n1 failed, 4 passed in 0.31s\n"
        b"py: exit 1 (0.9 seconds) /repo> pytest -q pid=1\n  py: FAIL code 1 (2.1 seconds)\n"
        b"  evaluation failed :( (2.2 seconds)\n",
        b"",
        "1 failed, 4 passed in 0.31s",
    ),
    (
        b"fix: commands[0]> pre-commit run --all-files\nfatal: unable to access\n"
        b"  fix: FAIL code 3 (5.99=setup[5.71]+cmd[0.28] seconds)\n  evaluation failed :( (6.15 seconds)\n",
        b"",
        "fix: FAIL code 3 (5.99=setup[5.71]+cmd[0.28] seconds)",
    ),
    (b"", b"nox > Running session lint\nnox > Session lint failed.\n", "Session lint failed."),
    (
        b"\n> kleur@4.1.5 test\n> uvu -r esm\n\n",
        b"sh: 1: uvu: not found\n",
        "sh: 1: uvu: not found",
    ),
    (b"# tests 2\n# pass 1\n# fail 1\n# cancelled 0\n# duration_ms 12\n", b"", "fail 1"),
    (
        b"\x1b[31m\x1b[1m2 failed\x1b[0m, \x1b[32m5 passed\x1b[0m in 0.20s\x1b[0m\n",
        b"",
        "2 failed, 5 passed in 0.20s",
    ),
]


@pytest.mark.parametrize(("stdout", "stderr", "expected"), SAMPLES)
def test_result_line_of_each_tool(stdout: bytes, stderr: bytes, expected: str) -> None:
    assert result_line(stdout, stderr) == expected
    assert stage_summary(None, stdout, stderr, 1) == expected


def test_without_a_result_line_the_last_line_is_the_summary() -> None:
    assert result_line(b"compiling\nsegmentation fault\n", b"") is None
    assert stage_summary(None, b"compiling\nsegmentation fault\n", b"", 139) == "segmentation fault"


def test_a_succeeding_stage_keeps_its_last_line_and_a_hint_always_wins() -> None:
    output = b"Found 0 errors.\nall good\n"
    assert stage_summary(None, output, b"", 0) == "all good"
    assert stage_summary("fixed", b"3 failed in 1.0s\n", b"", 1) == "fixed"


def test_a_huge_result_line_is_cut() -> None:
    line = b"Found 1 error." + b"x" * 10_000
    summary = result_line(line, b"")
    assert summary is not None and len(summary) == 240
