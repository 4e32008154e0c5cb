"""The cache directory: look entries up, store them atomically, restore, evict, sweep.

Layout (docs/cache.md)::

    <cache dir>/.gitignore          "*": never untracked files of the repository
    <cache dir>/entries/<2 hex>/<hex of the key>/   one entry (see `entry`)
    <cache dir>/tmp/                entries being built or removed; never looked up
    <cache dir>/latest/, stat/      see `latest` and `statcache`

An entry is built in ``tmp/``, every file fsynced, then renamed into place in one step: a
reader sees a whole entry or none, a process killed mid-store leaves only a ``tmp/``
directory (removed by `CacheStore.sweep_partial`), and of two writers of one key the second
rename fails and its copy is discarded. Every file's sha256 is in ``entry.json`` and is checked
before a hit is reported, and again while a hit is restored. Paths inside entries are
relative to the root, so one cache directory serves several worktrees of a repository.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from codex_orchestrator.cache.digests import Hasher
from codex_orchestrator.cache.entry import (
    ENTRY_FILE,
    ENTRY_SIZE_LIMIT,
    OUTPUTS_DIR,
    STDERR_FILE,
    STDOUT_FILE,
    USED_MARKER,
    Entry,
    StoredFile,
    StoredOutput,
    parse_entry,
)
from codex_orchestrator.cache.errors import (
    CacheStoreError,
    CorruptEntryError,
    DamagedEntry,
    InputsUnavailable,
)
from codex_orchestrator.cache.globs import compile_glob
from codex_orchestrator.cache.inputs import TreeReader
from codex_orchestrator.cache.key import Fingerprint, explain
from codex_orchestrator.cache.latest import load_latest, save_latest
from codex_orchestrator.cache.restore import check_destinations, restore_entry
from codex_orchestrator.cache.tree import DirChain, split_path
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.jsonio import atomic_write_bytes, dumps, fsync_dir
from codex_orchestrator.util.safefs import file_kind, open_at, open_no_follow, real_directory

ENTRIES_DIR = "entries"
TMP_DIR = "tmp"
_KEY = re.compile(r"sha256:([0-9a-f]{64})")
_READ = os.O_RDONLY | os.O_NONBLOCK
#: rename() of a directory onto a non-empty one.
_TAKEN = frozenset({errno.EEXIST, errno.ENOTEMPTY})

StoreOutcome = Literal["stored", "exists", "not stored"]


class Hit(NamedTuple):
    """A verified entry for the stage's key."""

    key: str
    entry: Entry

    @property
    def from_run(self) -> str:
        """The run that really ran the stage."""
        return self.entry.from_run

    @property
    def saved_seconds(self) -> float:
        """How long that run took over the stage."""
        return self.entry.duration_seconds


class Miss(NamedTuple):
    """No usable entry for the stage's key, and the one-line reason."""

    key: str
    reason: str


class StageRecord(NamedTuple):
    """The run of a stage that succeeded cleanly, as an entry records it."""

    run_id: str
    task: str
    pipeline: str
    stage: str
    summary: str | None
    duration_seconds: float


class EvictedEntry(NamedTuple):
    """An entry `CacheStore.evict` removed."""

    key: str
    from_run: str | None
    size: int
    last_used: float


class Eviction(NamedTuple):
    """What `CacheStore.evict` removed, and the bytes left."""

    removed: tuple[EvictedEntry, ...]
    freed_bytes: int
    kept_bytes: int


class CacheStore:
    """The entries under ``cache_dir`` for the repository (worktree) at ``root``.

    ``exclude``: directories relative to the root that output globs never match (the runs
    root, the cache directory). ``warn`` shows one line for a damaged entry. Nothing is
    created until the first `store`. Threads and processes may share it.
    """

    def __init__(
        self,
        cache_dir: Path,
        root: Path,
        *,
        exclude: Sequence[str] = (),
        warn: Callable[[str], None] = note,
    ) -> None:
        self.cache_dir = cache_dir
        self.root = root
        self.exclude = tuple(exclude)
        self._warn = warn
        self._hasher = Hasher()

    # --- lookup ---------------------------------------------------------------------------

    def lookup(self, identity: str, fingerprint: Fingerprint) -> Hit | Miss:
        """A hit when an intact entry has the fingerprint's key; else a miss saying why,
        against the last fingerprint stored for ``identity`` (e.g. ``pipeline/stage``).

        Reads only. A damaged entry is a miss with one warning.
        """
        key = fingerprint.key
        if fingerprint.problem is not None:
            return Miss(key, fingerprint.problem)
        try:
            entry = self._verified(key)
        except FileNotFoundError:
            return Miss(key, explain(load_latest(self.cache_dir, identity), fingerprint))
        except DamagedEntry as damage:
            self._warn(
                f"warning: stage cache: the entry of {identity} ({key[:19]}…) is damaged "
                f"({damage}); it is ignored and the stage runs"
            )
            return Miss(key, f"entry damaged ({damage})")
        return Hit(key, entry)

    def restore(self, hit: Hit, *, stdout: Path, stderr: Path) -> tuple[str, ...]:
        """Write the hit's original log bytes to ``stdout``/``stderr`` and its outputs under the
        root (even where they were deleted); returns the outputs' paths.

        Raises `RestoreRefused` (nothing written) when an output would land outside the root
        or through a link, `CorruptEntryError` when a stored file fails its check now (or the
        entry is gone), ``OSError`` when a destination cannot be written.
        """
        relative = _entry_dir(hit.key)
        try:
            chain = DirChain(self.cache_dir)
        except OSError as error:
            raise CorruptEntryError(f"stage cache: the entry cannot be read ({error})") from None
        with chain:

            def open_stored(name: str) -> int:
                directory, file = split_path(f"{relative}/{name}")
                return open_at(chain.open(directory), file, _READ)

            restored = restore_entry(
                hit.entry, open_stored, self.root, stdout, stderr, self._hasher
            )
            with contextlib.suppress(OSError):
                _touch(chain.open(relative), USED_MARKER)
        return restored

    def check_restore(self, hit: Hit) -> None:
        """Raise `RestoreRefused` when `restore` of ``hit`` would be refused now (an output
        through a link or outside the root); reads only (``plan``)."""
        check_destinations(self.root, hit.entry.outputs)

    # --- store ----------------------------------------------------------------------------

    def store(
        self,
        identity: str,
        fingerprint: Fingerprint,
        record: StageRecord,
        *,
        stdout: Path,
        stderr: Path,
    ) -> StoreOutcome:
        """Store a clean success of the stage: its logs, outputs and the run that proved it.

        ``fingerprint`` must be the one taken before the stage ran. Returns ``"stored"``,
        ``"exists"`` (an intact entry was already there: another writer won) or
        ``"not stored"`` (the fingerprint has a problem). Raises `CacheStoreError`.
        """
        if fingerprint.problem is not None or fingerprint.inputs is None:
            return "not stored"
        key = fingerprint.key
        try:
            temp = Path(tempfile.mkdtemp(prefix=f"{_hex(key)[:16]}.", dir=self._prepare()))
        except OSError as error:
            raise self._store_error(record, error) from None
        try:
            self._build(temp, fingerprint, record, stdout, stderr)
            outcome = self._publish(temp, key)
        except OSError as error:
            raise self._store_error(record, error) from None
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        with contextlib.suppress(OSError):
            save_latest(self.cache_dir, identity, fingerprint)
        return outcome

    # --- upkeep ---------------------------------------------------------------------------

    def evict(self, max_bytes: int) -> Eviction:
        """Remove entries, least recently used first, until they hold at most ``max_bytes``."""
        found = sorted(self._entries(), key=lambda item: item[1].last_used)
        total = sum(evicted.size for _, evicted in found)
        removed: list[EvictedEntry] = []
        for directory, evicted in found:
            if total <= max_bytes:
                break
            if self._discard(directory):
                removed.append(evicted)
                total -= evicted.size
        return Eviction(tuple(removed), sum(e.size for e in removed), total)

    def cited_runs(self) -> frozenset[str]:
        """The runs that kept entries name (``prune`` must keep them: hits cite them)."""
        return frozenset(
            evicted.from_run for _, evicted in self._entries() if evicted.from_run is not None
        )

    def sweep_partial(self, older_than_seconds: float) -> int:
        """Remove what killed stores left in ``tmp/`` (older than ``older_than_seconds``, so
        that stores in progress are left alone); returns how many were removed."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        with contextlib.suppress(OSError), os.scandir(self.cache_dir / TMP_DIR) as entries:
            for item in entries:
                with contextlib.suppress(OSError):
                    if item.stat(follow_symlinks=False).st_mtime < cutoff:
                        _remove(Path(item.path))
                        removed += 1
        return removed

    # --- internals ------------------------------------------------------------------------

    def _verified(self, key: str) -> Entry:
        """The entry of ``key`` after checking every file; FileNotFoundError when there is
        none (or it vanished meanwhile), `DamagedEntry` when it does not hold together."""
        relative = _entry_dir(key)
        try:
            with DirChain(self.cache_dir) as chain:
                entry_fd = chain.open(relative)
                entry = parse_entry(_read_small(entry_fd, ENTRY_FILE), key)
                try:
                    for stored in entry.files:
                        self._check_file(chain, relative, stored)
                except (FileNotFoundError, NotADirectoryError):
                    # Damage only if the directory read is still the entry: one taken out
                    # meanwhile (evicted, or replaced by a writer) merely vanished. Deciding
                    # by the name alone once reported an entry that a concurrent store renamed
                    # into place, between a failed open and the check, as damaged.
                    if self._in_place(entry_fd, relative):
                        raise DamagedEntry("a file of it is missing") from None
                    raise
                return entry
        except (FileNotFoundError, NotADirectoryError):  # (the cache dir may be a file)
            raise FileNotFoundError(key) from None
        except OSError as error:
            raise DamagedEntry(f"cannot be read: {error.strerror or error}") from None

    def _in_place(self, entry_fd: int, relative: str) -> bool:
        """True while the directory open as ``entry_fd`` is the one named ``relative``."""
        opened = os.fstat(entry_fd)
        try:
            named = os.lstat(self.cache_dir / relative)
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def _check_file(self, chain: DirChain, relative: str, stored: StoredFile) -> None:
        directory, name = split_path(f"{relative}/{stored.name}")
        fd = open_at(chain.open(directory), name, _READ)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DamagedEntry(f"{stored.name} is {file_kind(info.st_mode)}")
            if info.st_size != stored.size:
                raise DamagedEntry(
                    f"{stored.name} has {info.st_size} bytes, not {stored.size} (truncated?)"
                )
            digest, _ = self._hasher.stream(fd)
        finally:
            os.close(fd)
        if digest.hex() != stored.sha256:
            raise DamagedEntry(f"{stored.name} does not match its sha256")

    def _prepare(self) -> Path:
        """Create the cache directory (ignored by git) and its ``tmp/``; return ``tmp/``."""
        real_directory(self.cache_dir)
        ignore = self.cache_dir / ".gitignore"
        if not os.path.lexists(ignore):
            atomic_write_bytes(ignore, b"*\n")
        return real_directory(self.cache_dir / TMP_DIR)

    def _build(
        self, temp: Path, fingerprint: Fingerprint, record: StageRecord, stdout: Path, stderr: Path
    ) -> None:
        """Fill ``temp`` with a whole entry, every file fsynced."""
        temp_fd = os.open(temp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            files = [
                self._copy_in(open_no_follow(source, _READ), temp_fd, name, str(source))
                for source, name in ((stdout, STDOUT_FILE), (stderr, STDERR_FILE))
            ]
            outputs = self._copy_outputs(fingerprint.outputs, temp_fd, files)
            _touch(temp_fd, USED_MARKER)
            entry = Entry(
                key=fingerprint.key,
                created_at=iso_utc(),
                from_run=record.run_id,
                task=record.task,
                pipeline=record.pipeline,
                stage=record.stage,
                summary=record.summary,
                duration_seconds=record.duration_seconds,
                components=fingerprint.components,
                files=tuple(files),
                outputs=outputs,
            )
            fd = open_at(temp_fd, ENTRY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                _write_all(fd, dumps(entry.to_json()))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(temp_fd)
        finally:
            os.close(temp_fd)

    def _copy_outputs(
        self, globs: tuple[str, ...], temp_fd: int, files: list[StoredFile]
    ) -> tuple[StoredOutput, ...]:
        if not globs:
            return ()
        os.mkdir(OUTPUTS_DIR, 0o700, dir_fd=temp_fd)
        outputs_fd = open_at(temp_fd, OUTPUTS_DIR, os.O_RDONLY | os.O_DIRECTORY)
        outputs: list[StoredOutput] = []
        try:
            with TreeReader(self.root) as tree:
                chain = tree.chain
                try:
                    listing = tree.match_globs([compile_glob(g) for g in globs], self.exclude)
                except InputsUnavailable as problem:
                    raise CacheStoreError(f"stage cache: outputs: {problem}") from None
                for position, (path, info) in enumerate(listing):
                    if not stat.S_ISREG(info.st_mode):
                        raise CacheStoreError(
                            f"stage cache: output {path} is {file_kind(info.st_mode)}; only "
                            "regular files are stored, so the entry was not stored"
                        )
                    directory, name = split_path(path)
                    source = open_at(chain.open(directory), name, _READ)
                    stored = self._copy_in(source, outputs_fd, str(position), path)
                    files.append(
                        StoredFile(f"{OUTPUTS_DIR}/{position}", stored.size, stored.sha256)
                    )
                    outputs.append(
                        StoredOutput(path, f"{OUTPUTS_DIR}/{position}", info.st_mode & 0o777)
                    )
            os.fsync(outputs_fd)
        finally:
            os.close(outputs_fd)
        return tuple(outputs)

    def _copy_in(self, source: int, dir_fd: int, name: str, shown: str) -> StoredFile:
        """Copy open file ``source`` (closed here) to ``name`` in ``dir_fd``, fsynced."""
        try:
            before = os.fstat(source)
            if not stat.S_ISREG(before.st_mode):
                raise CacheStoreError(
                    f"stage cache: {shown} is {file_kind(before.st_mode)}, not a regular file"
                )
            target = open_at(dir_fd, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                digest, count = self._hasher.copy(source, target)
                os.fsync(target)
            finally:
                os.close(target)
            after = os.fstat(source)
        finally:
            os.close(source)
        if count != before.st_size or (after.st_mtime_ns, after.st_size) != (
            before.st_mtime_ns,
            before.st_size,
        ):
            raise CacheStoreError(
                f"stage cache: {shown} changed while it was stored; the entry was not stored"
            )
        return StoredFile(name, count, digest.hex())

    def _publish(self, temp: Path, key: str) -> StoreOutcome:
        """Rename ``temp`` into place; an intact entry already there wins."""
        parent = real_directory(self.cache_dir / ENTRIES_DIR / _hex(key)[:2])
        final = parent / _hex(key)
        for _ in range(2):
            try:
                os.rename(temp, final)
            except OSError as error:
                if error.errno not in _TAKEN:
                    raise
                if self._intact(key) or not self._discard(final):
                    return "exists"
                continue
            fsync_dir(parent)
            return "stored"
        return "exists"

    def _intact(self, key: str) -> bool:
        try:
            self._verified(key)
        except (FileNotFoundError, DamagedEntry):
            return False
        return True

    def _discard(self, directory: Path) -> bool:
        """Take an entry out of ``entries/`` in one rename, then delete it."""
        graveyard = self.cache_dir / TMP_DIR / f"removed.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            real_directory(graveyard.parent)
            os.rename(directory, graveyard)
        except OSError:
            return False
        _remove(graveyard)
        return True

    def _entries(self) -> list[tuple[Path, EvictedEntry]]:
        """Every entry directory with its size, last use and the run it cites."""
        found: list[tuple[Path, EvictedEntry]] = []
        for group in _subdirectories(self.cache_dir / ENTRIES_DIR):
            for directory in _subdirectories(group):
                key = f"sha256:{directory.name}"
                found.append((directory, _describe(directory, key)))
        return found

    def _store_error(self, record: StageRecord, error: OSError) -> CacheStoreError:
        where = f" ({error.filename})" if error.filename else ""
        return CacheStoreError(
            f"stage cache: could not store stage {record.stage}: "
            f"{error.strerror or error}{where}; the run is recorded and the stage will run "
            "again next time"
        )


def _describe(directory: Path, key: str) -> EvictedEntry:
    size = 0
    for dirpath, _, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
    last_used = 0.0
    for candidate in (directory / USED_MARKER, directory / ENTRY_FILE, directory):
        with contextlib.suppress(OSError):
            last_used = os.lstat(candidate).st_mtime
            break
    from_run = None
    with contextlib.suppress(OSError, DamagedEntry):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            from_run = parse_entry(_read_small(fd, ENTRY_FILE), key).from_run
        finally:
            os.close(fd)
    return EvictedEntry(key, from_run, size, last_used)


def _entry_dir(key: str) -> str:
    hexkey = _hex(key)
    return f"{ENTRIES_DIR}/{hexkey[:2]}/{hexkey}"


def _hex(key: str) -> str:
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"not a stage key: {key!r}")
    return match.group(1)


def _read_small(dir_fd: int, name: str) -> bytes:
    fd = open_at(dir_fd, name, _READ)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > ENTRY_SIZE_LIMIT:
            raise DamagedEntry(f"{name} is not a regular file of a sane size")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _touch(dir_fd: int, name: str) -> None:
    """Create ``name`` in ``dir_fd`` or set its times to now."""
    fd = open_at(dir_fd, name, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _subdirectories(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)
