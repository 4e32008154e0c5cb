"""The fingerprint last stored for each stage identity, so that a miss can say what changed.

Entries keep only the digest of their inputs; the full list (paths and per-file digests, some
megabytes for 50,000 inputs) is kept once per stage identity (e.g. ``pipeline/stage``), for
the latest entry stored, in ``<cache dir>/latest/<sha256 of identity>.bin``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from codex_orchestrator.cache.digests import inputs_digest, paths_blob
from codex_orchestrator.cache.fingerprint import InputDigests
from codex_orchestrator.cache.key import Fingerprint, KeyComponents
from codex_orchestrator.cache.packfile import read_packfile, write_packfile
from codex_orchestrator.util.safefs import real_directory

LATEST_DIR = "latest"


def latest_path(cache_dir: Path, identity: str) -> Path:
    """The file of stage ``identity``."""
    name = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir / LATEST_DIR / f"{name}.bin"


def save_latest(cache_dir: Path, identity: str, fingerprint: Fingerprint) -> None:
    """Record ``fingerprint`` as the last one stored for ``identity`` (raises ``OSError``)."""
    inputs = fingerprint.inputs
    paths, entries = (inputs.paths, inputs.entries) if inputs is not None else ((), b"")
    real_directory(cache_dir / LATEST_DIR)
    write_packfile(
        latest_path(cache_dir, identity),
        {"identity": identity, "components": fingerprint.components.to_json()},
        {"paths": paths_blob(paths), "entries": entries},
    )


def load_latest(cache_dir: Path, identity: str) -> Fingerprint | None:
    """The last fingerprint stored for ``identity``; None when there is none or it is damaged
    (it only serves to explain a miss)."""
    try:
        header, sections = read_packfile(latest_path(cache_dir, identity))
        if header.get("identity") != identity:
            return None
        components = KeyComponents.from_json(header.get("components"))
        blob, entries = sections["paths"], sections["entries"]
    except (OSError, ValueError, KeyError):
        return None
    paths = tuple(blob.decode("utf-8", "surrogateescape").split("\0")) if blob else ()
    if inputs_digest(len(paths), blob, entries) != components.inputs:
        return None
    return Fingerprint(components, InputDigests(paths, entries, components.inputs))
