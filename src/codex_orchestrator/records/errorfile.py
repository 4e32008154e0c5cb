"""Error files of failed stages, bounded whatever the stage printed.

Each string detail is capped at 8 KiB of UTF-8 (the tail, cut on a character boundary, with
``<key>_truncated: true``) and the whole file at 10,240 bytes on disk: control bytes are
replaced before encoding (so JSON escapes cannot inflate them), and when both output tails do
not fit, stdout's is shortened first, then stderr's, then the command's (which is kept whole
in the manifest, and here capped at 2 KiB so that it never crowds out the outputs).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DETAIL_BYTES = 8 * 1024
MAX_COMMAND_BYTES = 2 * 1024
MAX_FILE_BYTES = 10_240
_SHRINK_ORDER = ("stdout", "stderr", "command")
_CONTROL = {code: "\ufffd" for code in (*range(0, 9), 11, 12, *range(14, 32), 127)}


def clean_text(raw: bytes) -> str:
    """Decode output bytes for a JSON record: invalid UTF-8 and control bytes become U+FFFD."""
    return raw.decode("utf-8", errors="replace").translate(_CONTROL)


def utf8_tail(text: str, max_bytes: int) -> tuple[str, bool]:
    """Return the longest tail of ``text`` within ``max_bytes`` of UTF-8, and whether it was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    if max_bytes <= 0:
        return "", True
    tail = encoded[len(encoded) - max_bytes :]
    start = 0
    while start < len(tail) and tail[start] & 0xC0 == 0x80:
        start += 1
    return tail[start:].decode("utf-8"), True


def _encode(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def build_error_file(
    header: dict[str, Any], command: str, details: dict[str, Any], stdout: bytes, stderr: bytes
) -> bytes:
    """Return the bytes of an error file: ``header`` fields, ``command``, and bounded details.

    The file format is described in docs/run-records.md ("Error files").
    """
    # Control bytes become U+FFFD *before* JSON encoding: json.dumps would write each as a
    # six-byte \uXXXX escape, so a tail of NULs within its 8 KiB budget could encode to 48 KiB.
    texts = {
        "stdout": clean_text(stdout),
        "stderr": clean_text(stderr),
        "command": clean_text(command.encode("utf-8", errors="replace")),
    }
    budgets = {"stdout": MAX_DETAIL_BYTES, "stderr": MAX_DETAIL_BYTES, "command": MAX_COMMAND_BYTES}
    # Budgets count UTF-8 bytes of the raw text, but the bound is on the encoded file (quotes,
    # escaped newlines and backslashes, the header). Rather than predict the encoding, encode,
    # measure, and shrink: each pass takes the overflow out of the first output in
    # _SHRINK_ORDER that still has a budget (stdout first: stderr usually says why it failed).
    while True:
        document = _assemble(header, details, texts, budgets)
        payload = _encode(document)
        overflow = len(payload) - MAX_FILE_BYTES
        if overflow <= 0:
            return payload
        key = next((name for name in _SHRINK_ORDER if budgets[name] > 0), None)
        if key is None:
            # Only a header and fixed details that alone exceed the bound get here; callers
            # build those from bounded values, so this is a programming error, not bad input.
            raise ValueError("error file header alone exceeds the size bound")
        # Start from the bytes the text really uses (a short tail under a large budget would
        # otherwise need many passes). Removing N raw bytes removes at least N encoded bytes
        # (escapes only add), so one pass usually fits; the 64-byte minimum keeps every pass
        # making progress when a cut lands inside a multi-byte character.
        current = len(utf8_tail(texts[key], budgets[key])[0].encode("utf-8"))
        budgets[key] = max(0, min(budgets[key], current) - max(overflow, 64))


def _assemble(
    header: dict[str, Any],
    details: dict[str, Any],
    texts: dict[str, str],
    budgets: dict[str, int],
) -> dict[str, Any]:
    command, command_cut = utf8_tail(texts["command"], budgets["command"])
    bounded: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str):
            value, cut = utf8_tail(clean_text(value.encode("utf-8")), MAX_DETAIL_BYTES)
            if cut:
                bounded[f"{key}_truncated"] = True
        bounded[key] = value
    for key in ("stdout", "stderr"):
        bounded[key], cut = utf8_tail(texts[key], budgets[key])
        bounded[f"{key}_truncated"] = cut or bool(details.get(f"{key}_truncated"))
    document = dict(header)
    document["command"] = command
    if command_cut:
        document["command_truncated"] = True
    document["details"] = bounded
    return document
