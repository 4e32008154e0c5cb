"""Atomic, crash-safe file writes, whole-line appends and checked JSON reads.

Every JSON file is replaced atomically: the bytes go to a temp file with a name unique across
processes in the same directory, then ``os.replace`` swaps it in, so a reader never sees a torn
file, and a link in the file's place is replaced, never written through. Terminal writes pass
``durable=True`` to fsync the file and its directory. Appends refuse a link and write a whole
line or nothing. JSON from users goes through `loads_checked`, which turns every way a
document can be unusable into one error line (see ``docs/persistence.md``).

Every JSON the tool writes, to a file or to its output, is encoded by `json_text`: a
non-finite number (which JSON cannot hold: ``NaN`` and ``Infinity`` are not JSON) is written
as ``null``, and characters a terminal could act on are written as escapes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import OrchestratorError, UnsafeInputError
from codex_orchestrator.util.clock import compact_utc
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    open_directory,
    open_no_follow,
    open_parent,
    read_regular,
    rename_no_follow,
)
from codex_orchestrator.util.terminal_text import escape_json_controls


def json_text(data: Any, *, pretty: bool = True) -> str:
    """``data`` as JSON text, always valid JSON: the one encoder of records and output.

    ``pretty`` indents for people; compact output uses the C encoder and is several times
    faster. A non-finite number becomes ``null``; C1 controls and invisible format characters
    are written as ``\\uXXXX`` escapes (see `escape_json_controls`).
    """
    layout: dict[str, Any] = {"indent": 2} if pretty else {"separators": (",", ":")}
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, **layout)
    except ValueError:  # NaN or an infinity somewhere (rare: only a tampered record has one)
        text = json.dumps(_finite_only(data), ensure_ascii=False, allow_nan=False, **layout)
    return escape_json_controls(text)


def _finite_only(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_only(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(item) for item in value]
    return value


def dumps(data: Any, *, pretty: bool = True) -> bytes:
    """Serialise ``data`` as UTF-8 JSON (`json_text`) with a trailing newline."""
    return encode_record(json_text(data, pretty=pretty) + "\n")


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that it is valid Unicode.

    Python keeps bytes of the operating system that are not UTF-8 (in ``$USER``, a host or file
    name) as lone surrogates, which no file or terminal can encode, and a JSON record written
    by an older version may hold them as ``\\udcXX`` escapes. Whatever the tool records or
    renders passes through here first (`encode_record`), so a record never holds one.
    """
    if text.isascii():
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def encode_record(text: str) -> bytes:
    """UTF-8 bytes of text the tool writes (a record, a report), lone surrogates replaced."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return valid_text(text).encode("utf-8")


def fsync_dir(path: Path) -> None:
    """Flush the entries of directory ``path`` (reached without following a link), best effort."""
    directory = open_directory(path)
    try:
        _fsync_directory(directory)
    finally:
        os.close(directory)


def _fsync_directory(directory: int) -> None:
    """Flush the entries of a directory (an ``O_PATH`` descriptor) to disk, best effort."""
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, payload: bytes, *, durable: bool = False, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``payload`` atomically; fsync file and directory when ``durable``.

    The directory is reached without following a link (`safefs.open_parent`, which refuses
    one), and the temp file and the rename are relative to it, so nothing lands elsewhere.
    """
    directory, name = open_parent(path)
    try:
        _replace_in(directory, name, payload, durable, mode, path)
    finally:
        os.close(directory)


def _replace_in(
    directory: int, name: str, payload: bytes, durable: bool, mode: int, path: Path
) -> None:
    temp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, mode, dir_fd=directory)
    except OSError as error:  # name the file being written, not its temp file
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp, directory)
        raise
    os.close(fd)
    try:
        os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        _unlink_quietly(temp, directory)
        raise
    if durable:
        _fsync_directory(directory)


def atomic_write_json(path: Path, data: Any, *, durable: bool = False, pretty: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically."""
    atomic_write_bytes(path, dumps(data, pretty=pretty), durable=durable)


def append_line(path: Path, line: str, *, durable: bool = False) -> None:
    """Append one line to ``path`` in a single ``write`` (O_APPEND), fsynced when ``durable``.

    When the file does not end with a newline (a torn or hand-edited last line), the new line
    starts on a line of its own, so it stays parseable. A link at ``path`` is refused, and a
    short write (a full disk) is cut back off and raised as ``ENOSPC``: whole lines or none.
    """
    payload = encode_record(line.rstrip("\n") + "\n")
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        written = os.write(fd, payload)
        if written < len(payload):
            # O_APPEND left the offset at the end of our bytes: cut the file back to where they
            # began, so that no reader ever sees half a line (another appender racing a full
            # disk could lose its own partial line too, which is what it would want).
            end = os.lseek(fd, 0, os.SEEK_CUR)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end - written)
            raise OSError(
                errno.ENOSPC,
                f"short write ({written} of {len(payload)} bytes, the partial line was removed)",
                str(path),
            )
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path, limit: int = RECORD_SIZE_LIMIT) -> Any:
    """Parse a record the tool wrote; raises OSError or ValueError.

    OSError covers a missing file, a link, a FIFO or device and a file over ``limit`` bytes
    (see `safefs.read_regular`); ValueError covers invalid JSON and nesting too deep to parse.
    """
    data = read_regular(path, limit, follow_links=False)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


class _DuplicateKeys(dict[str, Any]):
    """An object in which a key occurs twice (the first repeated key is ``duplicate``)."""

    duplicate: str = ""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    flagged = _DuplicateKeys(document)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            flagged.duplicate = key
            break
        seen.add(key)
    return flagged


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for messages: "null", "boolean", "number", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def array_objects(value: object) -> list[dict[str, Any]]:
    """The objects of a record's JSON array (``commands``, ``child_runs``, events); anything
    else in it is skipped, and a value that is not an array has none (a record may have been
    tampered with)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def child_path(path: str, key: str | int) -> str:
    """JSON path of ``key`` under ``path``: ``a.b``, ``a[2]`` or ``a["odd key"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key and all(ch.isalnum() or ch in "_-$" for ch in key) and key.isascii():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def loads_checked(
    data: bytes | str,
    shown: str,
    *,
    strict: bool = False,
    error: type[OrchestratorError] = UnsafeInputError,
) -> Any:
    """Parse JSON from a user's file; every problem is one ``error`` line naming ``shown``.

    Covers bytes that are not UTF-8 (a UTF-8 BOM is allowed), invalid JSON (with line and
    column), nesting too deep for the parser and numbers too long to convert. ``strict`` also
    refuses, with the JSON path, an object holding the same key twice (JSON would keep the last
    silently) and strings or keys holding a lone surrogate (``"\\udc80"``), which no file or
    terminal can encode. ``json.loads`` never recurses in Python, so the check is iterative.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as problem:
            raise error(
                f"{shown}: not valid UTF-8 (byte {problem.start}); save the file as UTF-8"
            ) from None
    try:
        document = json.loads(data, object_pairs_hook=_pairs_hook if strict else None)
    except json.JSONDecodeError as problem:
        raise error(
            f"{shown}:{problem.lineno}:{problem.colno}: invalid JSON: {problem.msg}; "
            "fix the JSON syntax at that position"
        ) from None
    except RecursionError:
        raise error(f"{shown}: JSON nested too deeply to parse; flatten the document") from None
    except ValueError as problem:  # e.g. an integer literal beyond Python's digit limit
        raise error(
            f"{shown}: invalid JSON value ({problem}); use numbers of ordinary size"
        ) from None
    if strict:
        _check_tree(document, shown, error)
    return document


def _check_tree(document: Any, shown: str, error: type[OrchestratorError]) -> None:
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise error(
                    f"{shown}: {path or '(document)'}: holds a lone surrogate escape (such as "
                    "\\udc80), which is not text; remove it or write the character itself"
                )
        elif isinstance(value, dict):
            if isinstance(value, _DuplicateKeys):
                raise error(
                    f"{shown}: {child_path(path, value.duplicate)}: key given twice in the same "
                    "object; keep only one"
                )
            for key, item in value.items():
                if not _encodable(key):
                    raise error(
                        f"{shown}: {path or '(document)'}: a key holds a lone surrogate escape "
                        "(such as \\udc80); remove it"
                    )
                stack.append((item, child_path(path, key)))
        elif isinstance(value, list):
            stack.extend((item, child_path(path, index)) for index, item in enumerate(value))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def quarantine(path: Path) -> Path:
    """Move a corrupted file aside as ``<name>.corrupt-<time>`` and return the new path."""
    target = path.with_name(f"{path.name}.corrupt-{compact_utc()}-{os.urandom(2).hex()}")
    rename_no_follow(path, target)
    return target


def _unlink_quietly(name: str, directory: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=directory)
