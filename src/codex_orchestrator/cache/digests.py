"""Digests of single inputs: the streamed sha256 of a file, a link's target, a special file.

Each input contributes an entry of `ENTRY_SIZE` bytes to the key: a kind byte and a sha256.
A regular file's digest is the sha256 of its bytes (``sha256sum`` prints the same), read in
`CHUNK`-sized pieces into one reused buffer, so memory stays flat whatever the file's size. A
link is never read through: its digest is that of its target text. FIFOs, devices and
sockets are never opened (a FIFO would block): their digest names their kind.

A file that changes while it is read (its ``fstat`` before and after differ, or fewer or more
bytes came than its size) raises `UnstableInput`: such a digest proves nothing.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import operator
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable

from codex_orchestrator.cache.errors import InputsUnavailable, UnstableInput
from codex_orchestrator.util.safefs import file_kind, open_at

KIND_FILE = b"f"
KIND_EXECUTABLE = b"x"
KIND_LINK = b"l"
KIND_SPECIAL = b"s"
KIND_DIRECTORY = b"d"
ENTRY_SIZE = 33
CHUNK = 256 * 1024
#: A stat taken within this much of a file's last change is not trusted later: a second write
#: in the same timestamp tick (coarse clocks, 1-2 s on FAT and some network filesystems)
#: would leave size, mtime and ctime unchanged. Git re-reads such "racy" entries too.
RACY_MARGIN_NS = 2_000_000_000
#: ``lstat`` fields compared by the stat fast path, in this order.
STAT_FIELDS = ("st_mode", "st_size", "st_mtime_ns", "st_ino", "st_ctime_ns", "st_dev")
STAT_SIZE = 8 * len(STAT_FIELDS)


#: The `STAT_FIELDS` of an ``os.stat_result``, as a tuple (in C: this runs once an input on
#: every lookup).
stat_values: Callable[[os.stat_result], tuple[int, ...]] = operator.attrgetter(*STAT_FIELDS)


def pack_stats(infos: Iterable[os.stat_result]) -> bytes:
    """The `STAT_FIELDS` of each of ``infos`` in turn, as signed 64-bit integers."""
    values = list(itertools.chain.from_iterable(map(stat_values, infos)))
    try:
        return array.array("q", values).tobytes()
    except OverflowError:  # an inode or device number of 2**63 or more: same bits, signed
        return array.array("q", [(value + 2**63) % 2**64 - 2**63 for value in values]).tobytes()


class Hasher:
    """Computes input entries with one reused read buffer per thread (threads may share it)."""

    def __init__(self, racy_margin_ns: int = RACY_MARGIN_NS) -> None:
        self._local = threading.local()
        self.racy_margin_ns = racy_margin_ns

    def _buffer(self) -> tuple[bytearray, memoryview]:
        buffers: tuple[bytearray, memoryview] | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffer = bytearray(CHUNK)
            buffers = self._local.buffers = (buffer, memoryview(buffer))
        return buffers

    def entry(
        self, dir_fd: int, name: str, path: str, listed: os.stat_result
    ) -> tuple[bytes, bool]:
        """The entry of input ``name`` in ``dir_fd`` (shown as ``path``), listed with ``listed``,
        and whether its stat is too recent to be trusted next time (racy)."""
        started = time.time_ns()
        mode = listed.st_mode
        if stat.S_ISREG(mode):
            digest = self._file_digest(dir_fd, name, path, listed)
            kind = KIND_EXECUTABLE if mode & 0o111 else KIND_FILE
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as error:
                raise UnstableInput(
                    f"{path} changed while it was read ({error.strerror})"
                ) from None
            digest = hashlib.sha256(os.fsencode(target)).digest()
            kind = KIND_LINK
        elif stat.S_ISDIR(mode):
            digest, kind = hashlib.sha256(b"directory").digest(), KIND_DIRECTORY
        else:
            digest = hashlib.sha256(file_kind(mode).encode()).digest()
            kind = KIND_SPECIAL
        racy = max(listed.st_mtime_ns, listed.st_ctime_ns) >= started - self.racy_margin_ns
        return kind + digest, racy

    def stream(self, fd: int) -> tuple[bytes, int]:
        """The sha256 of what is left to read in ``fd`` and the number of bytes read."""
        buffer, view = self._buffer()
        digest = hashlib.sha256()
        count = 0
        with open(fd, "rb", buffering=0, closefd=False) as reader:
            while read := reader.readinto(buffer):
                digest.update(view[:read])
                count += read
        return digest.digest(), count

    def copy(self, source: int, target: int) -> tuple[bytes, int]:
        """Copy what is left to read in ``source`` to ``target``; its sha256 and length."""
        buffer, view = self._buffer()
        digest = hashlib.sha256()
        count = 0
        with open(source, "rb", buffering=0, closefd=False) as reader:
            while read := reader.readinto(buffer):
                chunk = view[:read]
                digest.update(chunk)
                while chunk:
                    chunk = chunk[os.write(target, chunk) :]
                count += read
        return digest.digest(), count

    def _file_digest(self, dir_fd: int, name: str, path: str, listed: os.stat_result) -> bytes:
        changed = f"{path} changed while it was read"
        try:
            fd = open_at(dir_fd, name, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise UnstableInput(f"{changed} (it was deleted)") from None
        except OSError as error:
            if stat.S_ISLNK(_lstat_mode(dir_fd, name)):
                raise UnstableInput(f"{changed} (it became a link)") from None
            raise InputsUnavailable(f"{path}: {error.strerror or error}") from None
        try:
            before = os.fstat(fd)
            if stat_values(before) != stat_values(listed):
                raise UnstableInput(changed)
            digest, count = self.stream(fd)
            after = os.fstat(fd)
        except OSError as error:
            raise InputsUnavailable(f"{path}: {error.strerror or error}") from None
        finally:
            os.close(fd)
        if count != before.st_size or stat_values(after) != stat_values(before):
            raise UnstableInput(changed)
        return digest


def _lstat_mode(dir_fd: int, name: str) -> int:
    try:
        return os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return 0


def inputs_digest(count: int, paths_blob: bytes, entries: bytes) -> str:
    """The sha256 (hex) of a set of inputs: their count, paths and entries."""
    digest = hashlib.sha256(b"%d\0" % count)
    digest.update(paths_blob)
    digest.update(b"\0")
    digest.update(entries)
    return digest.hexdigest()


def paths_blob(paths: list[str] | tuple[str, ...]) -> bytes:
    """Sorted relative paths joined by NUL (no path holds one), as the bytes of their names."""
    return "\0".join(paths).encode("utf-8", "surrogateescape")
