"""Fingerprint a stage's inputs under a root: which files, and a digest of each.

`Fingerprinter.inputs` lists the inputs (`inputs.TreeReader`), ``lstat``s them, and re-reads
only those whose stat moved since the stat cache saw them (`statcache`). When nothing moved,
the stored entries are reused as one block. In a git work tree, git vouches for the tracked
inputs instead (`gitstat`), so a no-change lookup ``lstat``s only what git cannot vouch for.
The result, `InputDigests`, carries a ``problem`` instead when the inputs cannot be
fingerprinted reliably (not a git repository, an unreadable file, a file that changed while
it was read): such a result is a miss and is never stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.cache.digests import (
    ENTRY_SIZE,
    RACY_MARGIN_NS,
    STAT_SIZE,
    Hasher,
    inputs_digest,
    pack_stats,
    paths_blob,
)
from codex_orchestrator.cache.errors import InputsUnavailable, UnstableInput
from codex_orchestrator.cache.gitfiles import GIT_TIMEOUT_SECONDS
from codex_orchestrator.cache.gitstat import GitRecord, record_trust, still_valid, unchanged
from codex_orchestrator.cache.inputs import Listing, TreeReader
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.statcache import StatCache, StatRecord
from codex_orchestrator.cache.tree import DirChain, split_path
from codex_orchestrator.util.console import note


class InputDigests(NamedTuple):
    """The inputs of a stage: sorted relative paths, one `ENTRY_SIZE`-byte entry each (kind
    and sha256, see `digests`), and the sha256 of both; or the ``problem`` that prevented it."""

    paths: tuple[str, ...]
    entries: bytes
    digest: str
    problem: str | None = None

    @classmethod
    def unavailable(cls, problem: str) -> InputDigests:
        """Inputs that could not be fingerprinted, and why (one line)."""
        return cls((), b"", "", problem)

    def entry(self, position: int) -> bytes:
        """The entry of ``paths[position]``."""
        return self.entries[position * ENTRY_SIZE : (position + 1) * ENTRY_SIZE]


def _digests_of(record: StatRecord) -> InputDigests:
    """The inputs a stat cache record holds, as they were when it was written."""
    paths = record.paths
    digest = inputs_digest(len(paths), record.paths_blob, record.entries)
    return InputDigests(tuple(paths), record.entries, digest)


class Fingerprinter:
    """Fingerprints inputs under ``root``, with a stat cache under ``cache_dir``.

    ``read_only`` (for ``plan``): reads the stat cache, never writes anything. ``exclude``:
    directories (relative to the root) that are never inputs, e.g. the runs root and the
    cache directory when they lie inside the root. ``warn`` shows a damaged stat cache.
    Threads may share one, except inside a `snapshot`, which belongs to one thread.
    """

    def __init__(
        self,
        root: Path,
        cache_dir: Path,
        *,
        read_only: bool = False,
        exclude: Sequence[str] = (),
        warn: Callable[[str], None] = note,
        git_timeout: float = GIT_TIMEOUT_SECONDS,
        racy_margin_ns: int = RACY_MARGIN_NS,
    ) -> None:
        self.root = root
        self.exclude = tuple(exclude)
        self.git_timeout = git_timeout
        self._stat_cache = StatCache(
            cache_dir, os.path.realpath(root), read_only=read_only, warn=warn
        )
        self._hasher = Hasher(racy_margin_ns)
        self._snapshot: dict[str, InputDigests] | None = None
        self._in_work_tree = True  # until git says otherwise
        self._tree: TreeReader | None = None

    def inputs(self, spec: CacheSpec) -> InputDigests:
        """The inputs of ``spec`` as they are now (as of the `snapshot`, inside one)."""
        identity = json.dumps([spec.inputs, self.exclude])
        if self._snapshot is not None and identity in self._snapshot:
            return self._snapshot[identity]
        cached = self._stat_cache.load(identity)
        try:
            tree = self._tree or TreeReader(self.root, remember=self._snapshot is not None)
        except OSError as error:  # the root itself cannot be opened
            return InputDigests.unavailable(f"{self.root}: {error.strerror or error}")
        if self._snapshot is not None:
            self._tree = tree
        try:
            vouched = self._vouched_by_git(spec, cached, tree)
            if vouched is not None:
                digests = _digests_of(vouched)
            else:
                walked: Listing = []
                listing = tree.list_inputs(
                    spec,
                    exclude=self.exclude,
                    git_timeout=self.git_timeout,
                    expected=cached.paths if cached is not None else (),
                    walked=walked,
                )
                digests = self._digests(identity, spec, listing, walked, cached, tree.chain)
        except (InputsUnavailable, UnstableInput) as problem:
            digests = InputDigests.unavailable(str(problem))
        finally:
            if self._snapshot is None:
                tree.close()
        if self._snapshot is not None:
            self._snapshot[identity] = digests
        return digests

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Within this block, `inputs` reads each directory, input and git listing once and
        answers a spec seen before without looking again.

        For ``plan``, and for the lookups of consecutive stages while nothing the caller
        starts writes under the root (no stage ran, no restore wrote an output): a change
        made meanwhile by someone else is seen by the next lookup outside the block, as a
        change made just after one lookup would be.
        """
        self._snapshot = {}
        try:
            yield
        finally:
            if self._tree is not None:
                self._tree.close()
            self._snapshot, self._tree = None, None

    def _vouched_by_git(
        self, spec: CacheSpec, cached: StatRecord | None, tree: TreeReader
    ) -> StatRecord | None:
        """``cached``, when git vouches that the inputs it holds are unchanged (`gitstat`);
        None when the ordinary path must look."""
        if cached is None or cached.git is None or cached.racy:
            return None
        paths, stats, git = cached.paths, cached.stats, cached.git
        if 2 * (len(git.untracked) + len(git.untrusted)) > len(paths):
            return None  # mostly files git does not know: reading them ourselves is cheaper
        timeout = self.git_timeout
        if unchanged(self.root, tree, spec, git, paths, stats, self.exclude, timeout):
            return cached
        return None

    def _digests(
        self,
        identity: str,
        spec: CacheSpec,
        listing: Listing,
        walked: Listing,
        cached: StatRecord | None,
        chain: DirChain,
    ) -> InputDigests:
        paths = [path for path, _ in listing]
        stats = pack_stats(info for _, info in listing)
        blob = paths_blob(paths)
        read_only = self._stat_cache.read_only
        if (
            cached is not None
            and not cached.racy
            and cached.paths_blob == blob
            and cached.stats == stats
        ):
            entries, racy = cached.entries, cached.racy  # nothing moved: the fast path
            if not read_only:
                margin = self._hasher.racy_margin_ns
                git = still_valid(cached.git, spec, walked, margin)
                if git is None:  # git could not vouch (the index changed): record again
                    git = self._git_record(spec, listing, racy, walked)
                if git is not cached.git:
                    self._stat_cache.save(identity, StatRecord(blob, stats, entries, racy, git))
        else:
            entries, racy = self._refresh(listing, stats, cached, chain)
            if not read_only:
                git = self._git_record(spec, listing, racy, walked)
                self._stat_cache.save(identity, StatRecord(blob, stats, entries, racy, git))
        return InputDigests(tuple(paths), entries, inputs_digest(len(paths), blob, entries))

    def _git_record(
        self, spec: CacheSpec, listing: Listing, racy: frozenset[int], walked: Listing
    ) -> GitRecord | None:
        if not self._in_work_tree:
            return None
        margin = self._hasher.racy_margin_ns
        try:
            return record_trust(self.root, spec, listing, racy, walked, margin, self.git_timeout)
        except InputsUnavailable:
            self._in_work_tree = False  # not a git work tree (or no git): do not ask again
            return None

    def _refresh(
        self, listing: Listing, stats: bytes, cached: StatRecord | None, chain: DirChain
    ) -> tuple[bytes, frozenset[int]]:
        """Entries for ``listing``: reused where the stat did not move, hashed elsewhere."""
        index = cached.index if cached is not None else {}
        entries = bytearray()
        racy: list[int] = []
        for position, (path, info) in enumerate(listing):
            current = stats[position * STAT_SIZE : (position + 1) * STAT_SIZE]
            previous = index.get(path)
            if cached is not None and previous is not None:
                reused = cached.reusable(previous, current)
                if reused is not None:
                    entries += reused
                    continue
            directory, name = split_path(path)
            try:
                dir_fd = chain.open(directory)
            except OSError:
                raise UnstableInput(f"{path} changed while it was read") from None
            entry, is_racy = self._hasher.entry(dir_fd, name, path, info)
            entries += entry
            if is_racy:
                racy.append(position)
        return bytes(entries), frozenset(racy)
