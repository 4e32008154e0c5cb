"""One cache entry on disk: its metadata file, ``entry.json``, and the files it lists.

An entry is a directory named by its key, holding ``entry.json``, ``stdout.log``,
``stderr.log``, ``outputs/<n>`` (the declared outputs, by position) and ``used`` (whose mtime
is the entry's last use, for eviction). ``entry.json`` names every other file with its size
and sha256 and carries a checksum of its own content; `parse_entry` refuses anything else in
it (unknown file names, paths that leave the root), so a damaged or tampered entry can point
neither a reader outside its directory nor a restore outside the root.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple

from codex_orchestrator.cache.errors import DamagedEntry
from codex_orchestrator.cache.key import KeyComponents

ENTRY_FORMAT = 1
ENTRY_FILE = "entry.json"
USED_MARKER = "used"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
OUTPUTS_DIR = "outputs"
_FILE_NAME = re.compile(r"stdout\.log|stderr\.log|outputs/(0|[1-9][0-9]{0,8})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ENTRY_SIZE_LIMIT = 64 * 1024 * 1024


class StoredFile(NamedTuple):
    """A file of an entry: its name in the entry, size and sha256 (hex)."""

    name: str
    size: int
    sha256: str


class StoredOutput(NamedTuple):
    """A declared output: where it goes under the root, which file holds it, its mode bits."""

    path: str
    file: str
    mode: int


class Entry(NamedTuple):
    """The metadata of one entry: the run that produced it and what it holds."""

    key: str
    created_at: str
    from_run: str
    task: str
    pipeline: str
    stage: str
    summary: str | None
    duration_seconds: float
    components: KeyComponents
    files: tuple[StoredFile, ...]
    outputs: tuple[StoredOutput, ...]

    def file(self, name: str) -> StoredFile:
        """The stored file called ``name``."""
        for stored in self.files:
            if stored.name == name:
                return stored
        raise DamagedEntry(f"{ENTRY_FILE} does not list {name}")

    def to_json(self) -> dict[str, Any]:
        """The ``entry.json`` document, with the checksum of its own content."""
        document = {
            "format": ENTRY_FORMAT,
            "key": self.key,
            "created_at": self.created_at,
            "from_run": self.from_run,
            "task": self.task,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "summary": self.summary,
            "duration_seconds": self.duration_seconds,
            "components": self.components.to_json(),
            "files": {f.name: {"size": f.size, "sha256": f.sha256} for f in self.files},
            "outputs": [{"path": o.path, "file": o.file, "mode": o.mode} for o in self.outputs],
        }
        return {**document, "checksum": _checksum(document)}


def parse_entry(data: bytes, key: str) -> Entry:
    """The entry of ``key`` from the bytes of its ``entry.json``; `DamagedEntry` otherwise."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise DamagedEntry(f"{ENTRY_FILE} is not valid JSON") from None
    if not isinstance(document, dict):
        raise DamagedEntry(f"{ENTRY_FILE} is not an object")
    try:
        return _entry(document, key)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, DamagedEntry):
            raise
        raise DamagedEntry(f"{ENTRY_FILE} is malformed ({type(error).__name__}: {error})") from None


def _checksum(document: dict[str, Any]) -> str:
    """The sha256 of ``document`` as canonical JSON: catches a damaged ``entry.json``."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _entry(document: dict[str, Any], key: str) -> Entry:
    if document.get("format") != ENTRY_FORMAT:
        raise DamagedEntry(f"{ENTRY_FILE} has format {document.get('format')!r}")
    content = {name: value for name, value in document.items() if name != "checksum"}
    if document.get("checksum") != _checksum(content):
        raise DamagedEntry(f"{ENTRY_FILE} does not match its checksum")
    if document["key"] != key:
        raise DamagedEntry(f"{ENTRY_FILE} names another key")
    components = KeyComponents.from_json(document["components"])
    if components.key != key:
        raise DamagedEntry(f"{ENTRY_FILE}: its components do not make its key")
    files = tuple(_file(name, value) for name, value in document["files"].items())
    names = {stored.name for stored in files}
    if not {STDOUT_FILE, STDERR_FILE} <= names:
        raise DamagedEntry(f"{ENTRY_FILE} lacks a log file")
    outputs = tuple(_output(value, names) for value in document["outputs"])
    duration = document["duration_seconds"]
    summary = document["summary"]
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
        raise DamagedEntry(f"{ENTRY_FILE}: duration_seconds is not a duration")
    text = ("created_at", "from_run", "task", "pipeline", "stage")
    if not all(isinstance(document[name], str) for name in text) or not (
        summary is None or isinstance(summary, str)
    ):
        raise DamagedEntry(f"{ENTRY_FILE}: a run field is not text")
    return Entry(
        key=key,
        **{name: document[name] for name in text},
        summary=summary,
        duration_seconds=float(duration),
        components=components,
        files=files,
        outputs=outputs,
    )


def _file(name: str, value: Any) -> StoredFile:
    if not _FILE_NAME.fullmatch(name):
        raise DamagedEntry(f"{ENTRY_FILE} lists an unexpected file {name!r}")
    size, digest = value["size"], value["sha256"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise DamagedEntry(f"{ENTRY_FILE}: {name} has no valid size")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise DamagedEntry(f"{ENTRY_FILE}: {name} has no valid sha256")
    return StoredFile(name, size, digest)


def _output(value: Any, names: set[str]) -> StoredOutput:
    path, file, mode = value["path"], value["file"], value["mode"]
    if not isinstance(path, str) or not is_relative_path(path):
        raise DamagedEntry(f"{ENTRY_FILE} lists an output outside the root: {path!r}")
    if file not in names or not str(file).startswith(OUTPUTS_DIR + "/"):
        raise DamagedEntry(f"{ENTRY_FILE}: output {path} has no stored file")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise DamagedEntry(f"{ENTRY_FILE}: output {path} has no valid mode")
    return StoredOutput(path, file, mode)


def is_relative_path(path: str) -> bool:
    """Whether ``path`` is a plain relative POSIX path: no ``..``, ``.`` or empty name, no NUL."""
    return (
        bool(path)
        and "\0" not in path
        and all(name not in ("", ".", "..") for name in path.split("/"))
    )
