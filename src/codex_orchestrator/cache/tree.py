"""Directories below a root, opened one name at a time so that no link is ever followed.

Every path the cache reads or writes under the repository root (inputs, restored outputs) is
reached through a `DirChain`: each directory is opened relative to its parent with
``O_NOFOLLOW``, so a link planted anywhere on the way fails with ``ELOOP`` instead of leading
out of the root, and no check-then-use race can redirect it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from codex_orchestrator.util.safefs import open_at


class Closing:
    """A resource used in a ``with`` block: leaving it calls `close`."""

    def close(self) -> None:
        """Release the resource."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class DirChain(Closing):
    """Open directories of one tree, keeping the chain to the last one open.

    Visiting paths in sorted order thus opens each directory about once. The descriptors
    returned stay valid until the next `open` or `close`.
    """

    def __init__(self, root: Path) -> None:
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._names: list[str] = []
        self._fds: list[int] = []

    def open(self, directory: str, *, create: bool = False) -> int:
        """The descriptor of ``directory`` (relative, ``""`` = the root).

        Raises ``OSError``: ``ELOOP`` when a name on the way is a link, ``ENOTDIR`` when it is
        not a directory, ``ENOENT`` when it is missing (``create`` makes missing ones).
        """
        names = directory.split("/") if directory else []
        keep = 0
        limit = min(len(names), len(self._names))
        while keep < limit and self._names[keep] == names[keep]:
            keep += 1
        self._drop(keep)
        parent = self._fds[-1] if self._fds else self._root_fd
        for name in names[keep:]:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=parent)
            parent = open_at(parent, name, os.O_RDONLY | os.O_DIRECTORY)
            self._names.append(name)
            self._fds.append(parent)
        return parent

    def close(self) -> None:
        """Close every descriptor, the root's included."""
        self._drop(0)
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def _drop(self, keep: int) -> None:
        while len(self._fds) > keep:
            self._names.pop()
            os.close(self._fds.pop())


def split_path(relative: str) -> tuple[str, str]:
    """``("a/b", "c")`` for ``"a/b/c"``; ``("", "c")`` for ``"c"``."""
    directory, _, name = relative.rpartition("/")
    return directory, name
