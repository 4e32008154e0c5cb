"""Files of named binary sections behind one JSON header line, checked by a sha256.

The stat cache and the per-stage record of the last stored inputs hold tens of thousands of
paths and digests: as JSON they would take longer to parse than the lookup they serve. Layout:
one JSON line ``{"sections": {"name": length, ...}, "sha256": "<hex of the bytes after the
line>", ...}``, then the sections' bytes in that order. Files are replaced atomically; one that
is short, long, unparseable or does not match its sha256 is refused whole (``ValueError``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.util.jsonio import atomic_write_bytes, dumps
from codex_orchestrator.util.safefs import read_regular

#: Far above what 100,000 inputs need (about 12 MB).
PACKFILE_SIZE_LIMIT = 512 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024


def write_packfile(path: Path, header: Mapping[str, Any], sections: Mapping[str, bytes]) -> None:
    """Replace ``path`` with ``header`` (JSON-able) and ``sections``, atomically."""
    digest = hashlib.sha256()
    for payload in sections.values():
        digest.update(payload)
    line = dumps(
        {
            **header,
            "sections": {name: len(payload) for name, payload in sections.items()},
            "sha256": digest.hexdigest(),
        },
        pretty=False,
    )
    atomic_write_bytes(path, line + b"".join(sections.values()))


def read_packfile(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and the sections of ``path``.

    ``FileNotFoundError`` when it is absent, another ``OSError`` when it cannot be read,
    ``ValueError`` when it is not a whole, intact packfile.
    """
    data = read_regular(path, PACKFILE_SIZE_LIMIT, follow_links=False)
    end = data.find(b"\n", 0, _HEADER_LIMIT)
    if end < 0:
        raise ValueError("no header line")
    try:
        header = json.loads(data[:end])
    except ValueError:
        raise ValueError("header is not JSON") from None
    lengths = header.get("sections") if isinstance(header, dict) else None
    if not isinstance(lengths, dict) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0
        for size in lengths.values()
    ):
        raise ValueError("header has no valid section lengths")
    payload = memoryview(data)[end + 1 :]
    if sum(lengths.values()) != len(payload):
        raise ValueError(f"{len(payload)} bytes of sections where the header says otherwise")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("sections do not match their sha256")
    sections: dict[str, bytes] = {}
    offset = 0
    for name, size in lengths.items():
        sections[str(name)] = bytes(payload[offset : offset + size])
        offset += size
    return header, sections
