"""Atomic, crash-safe file writes, whole-line appends and checked JSON reads.

Every JSON file is replaced atomically: the bytes go to a temp file with a name unique across
processes in the same directory, then ``os.replace`` swaps it in, so a reader never sees a torn
file, and a link in the file's place is replaced, never written through. Terminal writes pass
``durable=True`` to fsync the file and its directory. Appends refuse a link and write a whole
line or nothing. JSON from users goes through `loads_checked`, which turns every way a
document can be unusable into one error line (see ``docs/persistence.md``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

from codex_orchestrator.clock import compact_utc
from codex_orchestrator.errors import OrchestratorError, UnsafeInputError
from codex_orchestrator.safefs import RECORD_SIZE_LIMIT, open_no_follow, read_regular


def dumps(data: Any, *, pretty: bool = True) -> bytes:
    """Serialise ``data`` as UTF-8 JSON with a trailing newline.

    ``pretty`` indents for people; compact output uses the C encoder and is several times faster.
    """
    if pretty:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return encode_record(text + "\n")


def encode_record(text: str) -> bytes:
    """UTF-8 bytes of a record's text, which can always be written.

    Text from the operating system (arguments, environment, file names) can hold lone
    surrogates, which UTF-8 cannot encode; in JSON strings, ``backslashreplace`` writes them as
    ``\\udcXX`` escapes, which parse back to the same string, instead of failing the write.
    """
    return text.encode("utf-8", "backslashreplace")


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk (best effort on filesystems that refuse it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
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
    """Replace ``path`` with ``payload`` atomically; fsync file and directory when ``durable``."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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
        _unlink_quietly(temp)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    if durable:
        fsync_dir(path.parent)


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
    os.replace(path, target)
    return target


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
