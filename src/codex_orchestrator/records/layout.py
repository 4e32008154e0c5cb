"""Which directory is the repository, and where the tool keeps its state in it.

The root: ``CODEX_ORCHESTRATOR_ROOT``, else the nearest directory from the working directory up
holding ``codex.orchestrator.json``, else the nearest holding ``.git`` (a directory, or the
file of a worktree or submodule), else the working directory (git, just and cargo look up the
same way).

The state: a new repository gets one directory, ``.codex-orchestrator/`` with ``runs/`` and
``out/`` inside; a repository already holding ``.runs/`` (and no ``.codex-orchestrator/``)
keeps ``.runs/`` and ``out/``. ``CODEX_ORCHESTRATOR_RUNS_DIR``/``_OUT_DIR`` win over both.

Each state directory ignores itself: it holds a ``.gitignore`` of ``*`` (as ``.pytest_cache``
does), so neither ``git status`` nor ``git add -A`` sees a run record or a resume token. A
``.gitignore`` already there is never replaced: the user's own wins.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from codex_orchestrator.util.safefs import open_directory

#: The repository's config; its directory is the root (pipelines/config parses the file).
CONFIG_FILE = "codex.orchestrator.json"
TOOL_DIR = ".codex-orchestrator"
LEGACY_RUNS_DIR = ".runs"
LEGACY_OUT_DIR = "out"
IGNORE_FILE = ".gitignore"
IGNORE_TEXT = b"# written by codex-orchestrator: its state stays out of version control\n*\n"
#: Beside a task's runs: state snapshots waiting to be merged into ``state.json`` (whose format
#: persistence/state_format owns); named here so that ``status`` can look for them cheaply.
PENDING_DIR_NAME = "state.pending"
_RENAME_NOREPLACE = 1


def find_root(start: Path) -> Path:
    """The repository root for a command run in ``start`` (see the module notes)."""
    ancestors = [start, *start.parents]
    for marker in (CONFIG_FILE, ".git"):
        for directory in ancestors:
            if os.path.lexists(directory / marker):
                return directory
    return start


def default_state_roots(root: Path) -> tuple[str, str]:
    """The runs and out roots, relative to ``root``, when no variable names them."""
    if os.path.lexists(root / LEGACY_RUNS_DIR) and not os.path.lexists(root / TOOL_DIR):
        return LEGACY_RUNS_DIR, LEGACY_OUT_DIR
    return f"{TOOL_DIR}/runs", f"{TOOL_DIR}/out"


def state_directories(root: Path, runs_dir: Path, out_dir: Path) -> list[Path]:
    """The directories that hold the tool's state, outermost first: the tool's directory
    when a root lies in it, then the runs and out roots."""
    tool = Path(os.path.realpath(root / TOOL_DIR))
    holder = [tool] if tool in runs_dir.parents or tool in out_dir.parents else []
    return [*holder, runs_dir, out_dir]


def make_state_directory(path: Path) -> None:
    """Make directory ``path`` holding a ``.gitignore`` of ``*``, or add that file to an
    existing directory that has none (a user's own is never replaced).

    A new directory appears with the file already inside: it is filled under a temporary name
    and renamed into place without replacing anything (``renameat2(RENAME_NOREPLACE)``), so
    git never sees it bare, even after a crash. Best effort: when the directory cannot be made
    (read-only, a file in the way, a link), nothing is raised; the write that follows reports
    the reason with its own message.
    """
    with contextlib.suppress(OSError):
        parent = open_directory(path.parent, create=True)
        try:
            if not os.path.lexists(path):
                _create_ignored(parent, path.name)
            if path.is_dir() and not path.is_symlink():
                _add_ignore_file(path)
        finally:
            os.close(parent)


def _create_ignored(parent: int, name: str) -> None:
    temporary = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.mkdir(temporary, 0o777, dir_fd=parent)
    try:
        _write_ignore_file(parent, f"{temporary}/{IGNORE_FILE}")
        if _rename_no_replace(parent, temporary, name):
            return
    except BaseException:
        _discard(parent, temporary)
        raise
    _discard(parent, temporary)  # made by another process meanwhile, or no renameat2 here
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)


def _rename_no_replace(parent: int, source: str, target: str) -> bool:
    """Rename without replacing; False when ``target`` exists or the system cannot do it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(parent, source.encode(), parent, target.encode(), _RENAME_NOREPLACE)
    if done == 0:
        return True
    failure = ctypes.get_errno()
    if failure in (errno.EEXIST, errno.EINVAL, errno.ENOSYS, errno.ENOTEMPTY):
        return False  # EINVAL/ENOSYS: a file system or kernel without the flag
    raise OSError(failure, os.strerror(failure), target)


def _add_ignore_file(directory: Path) -> None:
    """Link a complete ``.gitignore`` into ``directory`` unless one is there already."""
    fd = open_directory(directory)
    temporary = f".{IGNORE_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        if os.path.lexists(directory / IGNORE_FILE):
            return
        _write_ignore_file(fd, temporary)
        with contextlib.suppress(FileExistsError):  # written by someone else meanwhile
            os.link(temporary, IGNORE_FILE, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=fd)
        os.close(fd)


def _write_ignore_file(directory: int, name: str) -> None:
    """Create ``name`` (new, not through a link) in ``directory`` holding `IGNORE_TEXT`."""
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
        dir_fd=directory,
    )
    try:
        os.write(fd, IGNORE_TEXT)
    finally:
        os.close(fd)


def _discard(parent: int, temporary: str) -> None:
    """Remove a temporary directory of `_create_ignored` and the file it holds."""
    with contextlib.suppress(OSError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{temporary}/{IGNORE_FILE}", dir_fd=parent)
        os.rmdir(temporary, dir_fd=parent)
