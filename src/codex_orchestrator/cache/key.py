"""The key of a stage, what it is made of, and why a key missed (docs/cache.md).

The key is ``sha256:<hex>`` over `KeyComponents`: the cache format version; digests of the
command, the stage's ``cwd`` and ``env`` mapping, of each listed variable's value (``None``
when unset: absent differs from empty) and of the ``outputs`` globs; the keys of the stages
it ``needs``; and the digest of its inputs (paths and contents). Components keep digests, not
values, so that an entry never holds a listed variable's value.

`explain` names the first thing that changed between a stored fingerprint and the current
one, in a fixed order of precedence, as one line (``command changed``, ``env HOME changed``,
``src/app.py modified``, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from codex_orchestrator.cache.fingerprint import InputDigests
from codex_orchestrator.cache.spec import CacheSpec

#: Changes whenever what a key covers, or how, changes: every older entry then misses.
CACHE_FORMAT = 1
NO_ENTRY = "no entry"


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class KeyComponents(NamedTuple):
    """What a key is made of, as digests (hex) except the keys of needed stages."""

    format: int
    command: str
    cwd: str
    env: str
    #: Listed variable name → digest of its value, None when it is not set.
    variables: Mapping[str, str | None]
    #: Needed stage id → that stage's key.
    needs: Mapping[str, str]
    outputs: str
    inputs: str

    @property
    def key(self) -> str:
        """``sha256:<hex>`` over every component."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The components as a JSON object (what entries store)."""
        return {
            "format": self.format,
            "command": self.command,
            "cwd": self.cwd,
            "env": self.env,
            "variables": dict(self.variables),
            "needs": dict(self.needs),
            "outputs": self.outputs,
            "inputs": self.inputs,
        }

    @classmethod
    def from_json(cls, document: object) -> KeyComponents:
        """Components stored by `to_json`; ``ValueError`` when the document is not that."""
        if not isinstance(document, dict):
            raise ValueError("components are not an object")
        text = ("command", "cwd", "env", "outputs", "inputs")
        if not all(isinstance(document.get(name), str) for name in text):
            raise ValueError("components lack a digest")
        variables, needs = document.get("variables"), document.get("needs")
        if not (
            isinstance(document.get("format"), int)
            and isinstance(variables, dict)
            and all(value is None or isinstance(value, str) for value in variables.values())
            and isinstance(needs, dict)
            and all(isinstance(value, str) for value in needs.values())
        ):
            raise ValueError("components are malformed")
        return cls(
            format=document["format"],
            **{name: document[name] for name in text},
            variables=variables,
            needs=needs,
        )


class Fingerprint(NamedTuple):
    """A stage's key components, its inputs, and its ``outputs`` globs (which a store copies).

    ``inputs`` is None for a stored fingerprint whose input list was not kept.
    """

    components: KeyComponents
    inputs: InputDigests | None
    outputs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The stage key."""
        return self.components.key

    @property
    def problem(self) -> str | None:
        """Why the inputs could not be fingerprinted (then this is a miss, never stored)."""
        return self.inputs.problem if self.inputs is not None else None


def stage_fingerprint(
    *,
    command: str,
    cwd: str | None,
    env: Mapping[str, str],
    spec: CacheSpec,
    environ: Mapping[str, str],
    needs: Mapping[str, str],
    inputs: InputDigests,
) -> Fingerprint:
    """The fingerprint of a command stage.

    ``env`` is the stage's configured ``env`` mapping; ``environ`` the environment the stage
    would run with (the listed variables are read from it); ``needs`` maps each needed stage
    id to its key; ``inputs`` comes from `Fingerprinter.inputs`.
    """
    components = KeyComponents(
        format=CACHE_FORMAT,
        command=_digest(command),
        cwd=_digest(cwd),
        env=_digest(dict(env)),
        variables={
            name: None if environ.get(name) is None else _digest(environ[name]) for name in spec.env
        },
        needs=dict(needs),
        outputs=_digest(list(spec.outputs)),
        inputs=inputs.digest,
    )
    return Fingerprint(components, inputs, spec.outputs)


def explain(previous: Fingerprint | None, current: Fingerprint) -> str:
    """One line naming what changed first from ``previous`` (the last fingerprint stored for
    the stage) to ``current``: ``no entry`` when nothing was stored or nothing changed."""
    if previous is None:
        return NO_ENTRY
    before, now = previous.components, current.components
    for name, label in (
        ("format", "cache format"),
        ("command", "command"),
        ("cwd", "cwd"),
        ("env", "env"),
    ):
        if getattr(before, name) != getattr(now, name):
            return f"{label} changed"
    for variable in sorted(set(before.variables) | set(now.variables)):
        if before.variables.get(variable, "") != now.variables.get(variable, ""):
            return f"env {variable} changed"
    for stage in sorted(set(before.needs) | set(now.needs)):
        if before.needs.get(stage) != now.needs.get(stage):
            return f"needs {stage} changed"
    if before.outputs != now.outputs:
        return "outputs changed"
    if before.inputs != now.inputs:
        if previous.inputs is None or current.inputs is None:
            return "inputs changed"
        return first_input_change(previous.inputs, current.inputs)
    return NO_ENTRY


def first_input_change(before: InputDigests, now: InputDigests) -> str:
    """``<path> modified|added|deleted`` for the first path (in path order) that differs."""
    old, new = before.paths, now.paths
    if old == new:
        for position, path in enumerate(new):
            if before.entry(position) != now.entry(position):
                return f"{shown_path(path)} modified"
        return "inputs changed"
    i = j = 0
    while i < len(old) or j < len(new):
        if i < len(old) and j < len(new) and old[i] == new[j]:
            if before.entry(i) != now.entry(j):
                return f"{shown_path(new[j])} modified"
            i, j = i + 1, j + 1
        elif j >= len(new) or (i < len(old) and old[i] < new[j]):
            return f"{shown_path(old[i])} deleted"
        else:
            return f"{shown_path(new[j])} added"
    return "inputs changed"


def shown_path(path: str) -> str:
    """``path`` as it can be shown on one line (quoted, escapes visible, when it must be)."""
    return path if path.isprintable() else json.dumps(path)
