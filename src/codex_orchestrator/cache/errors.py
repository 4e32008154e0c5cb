"""The stage cache's exceptions; each carries one line for the user.

Input problems (`InputsUnavailable`, `UnstableInput`) never escape `Fingerprinter.inputs`:
they become the ``problem`` of its result, a miss that is never stored. The caller handles
the others: `CacheStoreError` is shown as a warning (the run goes on); on `CorruptEntryError`
and `RestoreRefused` (with a warning) the stage runs as if it had missed.
"""

from __future__ import annotations

from codex_orchestrator.errors import OutsideRootError


class InputsUnavailable(Exception):
    """The inputs cannot be listed or read (``"git"`` outside a repository, git failing, an
    unreadable file or directory): the key would not cover them."""


class UnstableInput(Exception):
    """An input that changed while it was being read."""


class DamagedEntry(ValueError):
    """An entry whose metadata or files do not hold together (a miss, with a warning)."""


class CacheStoreError(Exception):
    """An entry could not be stored (read-only or full disk, an output that is a link, ...).

    The run's own records never depend on the cache: show it as a warning and carry on.
    """


class CorruptEntryError(Exception):
    """A hit's entry failed its check while it was being restored, or vanished: run the
    stage instead."""


class RestoreRefused(OutsideRootError):
    """A hit's output would be written outside the root or through a link: nothing was
    written; run the stage instead. ``reason`` is the short form, for the manifest."""

    def __init__(self, path: str, why: str) -> None:
        self.reason = f"output {path!r} not restored: {why}"
        super().__init__(
            f"stage cache: refusing to restore output {path!r}: {why}; the tool never writes "
            "through a link or outside the root, so the stage runs instead; remove the link, "
            "or the path from cache.outputs"
        )
