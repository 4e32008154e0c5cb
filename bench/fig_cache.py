"""The stage cache (issue 23): lookups over large trees, hashing speed, memory.

- ``"git"`` lookup: a repository of 50,000 tracked files (10,000 with ``--quick``), nothing
  changed: fingerprint its inputs (``git ls-files`` plus the stat fast path) and look the key up
  (a verified hit), against ``git status --porcelain`` on the same tree. Target: within 2x.
- Hashing on a miss: fingerprint 1,000 files (200 MB; 50 MB quick) with no stat cache, against
  ``sha256sum`` over the same files. Target: at least 70% of its throughput.
- Memory: peak RSS of a fresh interpreter hashing a 1 GB input (256 MB quick) and a 16 MB one,
  measured by the process itself (``VmHWM``). Target: under 40 MB, and flat.
- 4 stage lookups over 10,000 input files (``src/**``, committed), nothing changed, in a fresh
  interpreter (fingerprint, look up, restore the logs of each, in one
  `Fingerprinter.snapshot`), against the whole wall time of a 1-stage run without cache: the
  budget the later whole-CLI figure (4 cached stages within 1.5x of that run) leaves.

Timed samples alternate with their baseline; medians are shown. Trees are generated in a temp
directory and aged past the racy-timestamp window (docs/cache.md) before they are measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _cache_child import INPUTS, fingerprint, stage_identity
from _harness import (
    BENCH_DIR,
    PYTHON,
    BenchError,
    Figure,
    Profile,
    alternate,
    bench_repo,
    fmt_mb,
    fmt_seconds,
    median,
    progress,
    timed_run,
)
from codex_orchestrator.cache.digests import RACY_MARGIN_NS
from codex_orchestrator.cache.fingerprint import Fingerprinter
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import CacheStore, Hit, StageRecord

GIT_RATIO_TARGET = 2.0
HASH_TARGET = 0.70
RSS_TARGET_MIB = 40.0
FLAT_TOLERANCE_MIB = 2.0
LOOKUP_BUDGET = 0.5
CLI_TARGET = 1.5
GIT = ("git", "-c", "user.name=bench", "-c", "user.email=bench@example.com")
STAGE_COMMANDS = ["make build", "make lint", "make typecheck", "make test"]


@contextmanager
def _temp(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"codex-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tree(root: Path, files: int, size: Callable[[int], int]) -> int:
    """``files`` files under ``root/src`` (20 a directory, 50 directories a level); total bytes."""
    total = 0
    block = os.urandom(1 << 20)
    for n in range(files):
        directory = root / "src" / f"pkg{n // 1000:03d}" / f"mod{n // 20 % 50:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        length = size(n)
        start = (n * 7919) % (len(block) - min(length, len(block)) + 1)
        payload = (block * (length // len(block) + 1))[start : start + length]
        (directory / f"file{n % 20:02d}.py").write_bytes(payload)
        total += length
    return total


def _age_past_racy_window() -> None:
    """Wait until files written so far are old enough for the stat fast path to trust."""
    time.sleep(RACY_MARGIN_NS / 1e9 + 0.2)


def _git_lookup(profile: Profile) -> list[Figure]:
    files = 10_000 if profile.quick else 50_000
    with bench_repo("cache-git") as repo:
        progress(f"cache: generating a repository of {files:,} tracked files")
        _tree(repo.root, files, lambda n: 100 + n % 900)
        subprocess.run([*GIT, "add", "-A"], cwd=repo.root, check=True, capture_output=True)
        subprocess.run([*GIT, "commit", "-qm", "x"], cwd=repo.root, check=True, capture_output=True)
        _age_past_racy_window()
        cache = repo.root.parent / f"{repo.root.name}-cache"
        spec = CacheSpec(inputs="git")
        fingerprinter = Fingerprinter(repo.root, cache)
        store = CacheStore(cache, repo.root)

        try:
            logs = cache.parent / f"{repo.root.name}-logs"
            logs.mkdir()
            (logs / "out").write_bytes(b"ok\n")
            (logs / "err").write_bytes(b"")
            record = StageRecord("run-1", "default", "bench", "check", "ok", 30.0)
            store.store(
                "bench/check",
                fingerprint(fingerprinter, "make check", spec),
                record,
                stdout=logs / "out",
                stderr=logs / "err",
            )

            def lookup() -> float:
                started = time.perf_counter()
                found = store.lookup("bench/check", fingerprint(fingerprinter, "make check", spec))
                elapsed = time.perf_counter() - started
                if not isinstance(found, Hit):
                    raise BenchError(f"the no-change git lookup missed: {found.reason}")
                return elapsed

            def after_index_change() -> float:
                index = repo.root / ".git" / "index"
                os.utime(index)  # as a `git add` would: git no longer vouches until recorded
                return lookup()

            def status() -> float:
                elapsed, _ = timed_run(["git", "status", "--porcelain"], cwd=repo.root)
                return elapsed

            lookup(), status()  # warm-up
            rounds = 5 if profile.quick else 9
            progress(f"cache: git lookup vs git status, {rounds} alternating rounds")
            samples = alternate(
                rounds,
                [("status", status), ("lookup", lookup), ("index", after_index_change)],
            )
        finally:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(cache.parent / f"{repo.root.name}-logs", ignore_errors=True)
    wall, base, slow = (median(samples[name]) for name in ("lookup", "status", "index"))
    return [
        Figure(
            "cache.git_lookup",
            f'cache: "git" lookup, {files:,} files, no change',
            fmt_seconds(wall),
            f"git status --porcelain {fmt_seconds(base)}",
            f"{wall / base:.2f}x",
            f"<= {GIT_RATIO_TARGET:.0f}x",
            wall / base <= GIT_RATIO_TARGET,
            {"files": files, "lookup_s": samples["lookup"], "git_status_s": samples["status"]},
            note=f"medians of {len(samples['lookup'])} alternating rounds; in-process lookup "
            "(git diff-files and ls-files --others, stat cache, entry verified)",
        ),
        Figure(
            "cache.git_lookup_index_changed",
            f'cache: "git" lookup, {files:,} files, index just changed',
            fmt_seconds(slow),
            f"git status --porcelain {fmt_seconds(base)}",
            f"{slow / base:.2f}x",
            "",
            None,
            {"files": files, "lookup_s": samples["index"], "git_status_s": samples["status"]},
            note="the first lookup after the index changed (git add, commit): git cannot "
            "vouch, so every input is lstat'ed, then what git vouches for is recorded again",
        ),
    ]


def _hashing(profile: Profile) -> Figure:
    total_mb = 50 if profile.quick else 200
    files = 1000
    with _temp("cache-hash") as root:
        sizes = [4096 * (1 + (n * 37) % 97) for n in range(files)]
        scale = total_mb * 1_000_000 / sum(sizes)
        total = _tree(root, files, lambda n: int(sizes[n] * scale))
        paths = sorted(str(p.relative_to(root)) for p in (root / "src").rglob("*.py"))

        def ours() -> float:
            fingerprinter = Fingerprinter(root, root / "no-cache", read_only=True)
            started = time.perf_counter()
            digests = fingerprinter.inputs(INPUTS)
            elapsed = time.perf_counter() - started
            if digests.problem or len(digests.paths) != files:
                raise BenchError(f"hashing failed: {digests.problem}")
            return elapsed

        def sha256sum() -> float:
            elapsed, _ = timed_run(["sha256sum", "--", *paths], cwd=root)
            return elapsed

        if shutil.which("sha256sum") is None:
            raise BenchError("sha256sum is not installed")
        ours(), sha256sum()  # warm-up: the page cache holds the files for both
        rounds = 5 if profile.quick else 7
        progress(f"cache: hashing {total / 1e6:.0f} MB vs sha256sum, {rounds} rounds")
        samples = alternate(rounds, [("sha256sum", sha256sum), ("ours", ours)])
    mine = total / median(samples["ours"]) / 1e6
    theirs = total / median(samples["sha256sum"]) / 1e6
    return Figure(
        "cache.hash_throughput",
        f"cache: hashing on a miss, {files:,} files, {total / 1e6:.0f} MB",
        f"{mine:.0f} MB/s",
        f"sha256sum {theirs:.0f} MB/s",
        f"{mine / theirs:.0%}",
        f">= {HASH_TARGET:.0%}",
        mine / theirs >= HASH_TARGET,
        {"bytes": total, "ours_s": samples["ours"], "sha256sum_s": samples["sha256sum"]},
        note="page cache warm for both; ours includes listing and lstat of every file",
    )


def _peak(path: Path) -> tuple[int, int]:
    _, completed = timed_run([PYTHON, str(BENCH_DIR / "_cache_child.py"), "rss", str(path)])
    answer = json.loads(completed.stdout)
    if answer["problem"]:
        raise BenchError(f"hashing {path.name} failed: {answer['problem']}")
    return int(answer["peak_kib"]), int(answer["base_kib"])


def _memory(profile: Profile) -> Figure:
    big_mb = 256 if profile.quick else 1024
    with _temp("cache-rss") as root:
        block = os.urandom(1 << 20)
        for name, megabytes in (("big.bin", big_mb), ("small.bin", 16)):
            with open(root / name, "wb") as handle:
                for _ in range(megabytes):
                    handle.write(block)
        progress(f"cache: peak RSS hashing a {big_mb} MB input")
        big, base = _peak(root / "big.bin")
        small, _ = _peak(root / "small.bin")
    growth = (big - small) / 1024
    return Figure(
        "cache.rss",
        f"cache: peak RSS hashing a {big_mb} MB input",
        fmt_mb(big),
        f"16 MB input {fmt_mb(small)}; imports only {fmt_mb(base)}",
        f"{growth:+.1f} MiB over 16 MB",
        f"< {RSS_TARGET_MIB:.0f} MiB, flat (+{FLAT_TOLERANCE_MIB:.0f} MiB)",
        big / 1024 < RSS_TARGET_MIB and growth <= FLAT_TOLERANCE_MIB,
        {"peak_kib": big, "small_peak_kib": small, "imports_kib": base},
        note="VmHWM of a fresh interpreter that imports the cache and fingerprints the file",
    )


def _commit_all(root: Path, ignored: str) -> None:
    (root / ".gitignore").write_text(ignored)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run([*GIT, "commit", "-qm", "x"], cwd=root, check=True, capture_output=True)


def _against_one_stage_run(
    profile: Profile, what: str, measured: Callable[[], float], one_stage_run: Callable[[], float]
) -> dict[str, list[float]]:
    """Samples of ``measured`` alternating with its baseline, after one warm-up of each."""
    measured(), one_stage_run()
    rounds = 5 if profile.quick else 9
    progress(f"cache: {what} vs a 1-stage run, {rounds} alternating rounds")
    return alternate(rounds, [("run", one_stage_run), ("measured", measured)])


def _four_lookups(profile: Profile) -> Figure:
    files = 10_000
    with bench_repo("cache-4") as repo:
        progress(f"cache: 4 stored stages over {files:,} input files")
        _tree(repo.root, files, lambda n: 200 + n % 2000)
        repo.write_config([{"id": "one", "stages": [{"id": "s", "command": "true"}]}], "one")
        _commit_all(repo.root, ".cache-bench/\n.logs-bench/\n.runs/\nout/\n")
        cache, logs = repo.root / ".cache-bench", repo.root / ".logs-bench"
        logs.mkdir()
        (logs / "out").write_bytes(b"ok\n" * 20)
        (logs / "err").write_bytes(b"")
        _age_past_racy_window()
        fingerprinter = Fingerprinter(repo.root, cache)
        store = CacheStore(cache, repo.root)
        for command in STAGE_COMMANDS:
            record = StageRecord("run-1", "default", "bench", command.split()[-1], "ok", 10.0)
            store.store(
                stage_identity(command),
                fingerprint(fingerprinter, command),
                record,
                stdout=logs / "out",
                stderr=logs / "err",
            )
        spec = json.dumps(
            {
                "root": str(repo.root),
                "cache": str(cache),
                "commands": STAGE_COMMANDS,
                "logs": str(logs),
            }
        )
        child = [PYTHON, str(BENCH_DIR / "_cache_child.py"), "lookups", spec]

        def lookups() -> float:
            _, completed = timed_run(child, env=repo.env, cwd=repo.root)
            answer = json.loads(completed.stdout)
            if answer["hits"] != len(STAGE_COMMANDS):
                raise BenchError(f"only {answer['hits']} of 4 stages hit")
            return float(answer["seconds"])

        def one_stage_run() -> float:
            elapsed, _ = repo.start()
            return elapsed

        samples = _against_one_stage_run(profile, "4 lookups", lookups, one_stage_run)
    wall, base = median(samples["measured"]), median(samples["run"])
    return Figure(
        "cache.lookups_4x10k",
        f"cache: 4 stage lookups over {files:,} files, no change",
        fmt_seconds(wall),
        f"1-stage run, no cache {fmt_seconds(base)}",
        f"{wall / base:.2f}x",
        f"<= {LOOKUP_BUDGET}x (whole-CLI bar: 1.5x)",
        wall / base <= LOOKUP_BUDGET,
        {"lookups_s": samples["measured"], "one_stage_run_s": samples["run"]},
        note="globs over committed files (git vouches for them); fingerprint + verified lookup "
        "+ log restore of each stage in one snapshot of the tree, in a fresh interpreter "
        "(imports excluded); the run is a whole `start` of a `true` stage",
    )


def _whole_cli(profile: Profile) -> Figure:
    """The whole-CLI bar: ``start`` of 4 cached stages over 10,000 files, nothing changed (all
    hits), against ``start`` of a 1-stage pipeline without cache, in the same repository."""
    files = 10_000
    with bench_repo("cache-cli") as repo:
        progress(f"cache: whole CLI, 4 cached stages over {files:,} input files")
        _tree(repo.root, files, lambda n: 200 + n % 2000)
        cached = [
            {"id": name, "command": f"echo {name}", "cache": {"inputs": ["src/**"]}}
            for name in ("build", "lint", "typecheck", "test")
        ]
        repo.write_config(
            [
                {"id": "one", "stages": [{"id": "s", "command": "true"}]},
                {"id": "cached", "stages": cached},
            ],
            "one",
        )
        _commit_all(repo.root, ".runs/\nout/\n")
        _age_past_racy_window()

        def cached_run() -> float:
            elapsed, answer = repo.start("cached")
            hits = [
                entry
                for entry in repo.manifest(answer)["commands"]
                if (entry.get("cache") or {}).get("status") == "hit"
            ]
            if len(hits) != len(cached):
                raise BenchError(f"only {len(hits)} of {len(cached)} cached stages hit")
            return elapsed

        def one_stage_run() -> float:
            elapsed, _ = repo.start("one")
            return elapsed

        repo.start("cached")  # the first run stores the four entries
        samples = _against_one_stage_run(profile, "whole CLI", cached_run, one_stage_run)
    wall, base = median(samples["measured"]), median(samples["run"])
    return Figure(
        "cache.cli_4x10k",
        f"cache: `start` of 4 cached stages over {files:,} files, all hits",
        fmt_seconds(wall),
        f"`start` of 1 stage, no cache {fmt_seconds(base)}",
        f"{wall / base:.2f}x",
        f"<= {CLI_TARGET}x",
        wall / base <= CLI_TARGET,
        {"cached_run_s": samples["measured"], "one_stage_run_s": samples["run"]},
        note="both are whole `start` processes in one repository; each cached stage is "
        "fingerprinted (git vouches for the committed inputs), looked up, verified and its "
        "logs replayed, with no process started",
    )


def measure(profile: Profile) -> list[Figure]:
    """The stage-cache figures."""
    return [
        *_git_lookup(profile),
        _hashing(profile),
        _memory(profile),
        _four_lookups(profile),
        _whole_cli(profile),
    ]
