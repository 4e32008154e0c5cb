"""Named exception classes; each user-facing error carries its exit code.

Exit codes: 0 run succeeded; 1 run failed, or an internal or environment fault (a file the
tool cannot write, a full disk); 2 bad input; 3 the run ran nothing (every stage skipped for a
missing tool or nothing to run); 75 a lock still held by another process after every retry
(try again later); 128+N cancelled by signal N.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: The run ran nothing: every stage was skipped (missing tool, nothing to run).
EXIT_SKIPPED = 3
EXIT_FAULT = 1
EXIT_LOCK_TIMEOUT = 75  # EX_TEMPFAIL: nothing is wrong with the input, try again later


class OrchestratorError(Exception):
    """An error reported to the user as one clear line and an exit code."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(OrchestratorError):
    """Bad command-line usage."""


class InvalidIdError(OrchestratorError):
    """A task, run, pipeline or stage id that does not match the id rule."""


class ConfigError(OrchestratorError):
    """`codex.orchestrator.json` is malformed, ill-typed or inconsistent."""


class UnknownPipelineError(OrchestratorError):
    """The requested pipeline is defined neither in the config nor built in."""


class RunNotFoundError(OrchestratorError):
    """No run with the given id exists under the runs root."""


class CorruptManifestError(OrchestratorError):
    """A manifest exists but cannot be parsed; it is left untouched."""


class ResumeRefusedError(OrchestratorError):
    """Resume was refused (wrong token, run still alive, pipeline changed)."""


class RunActiveError(OrchestratorError):
    """The run is still alive and owns its records (resume without --force, review)."""


class LockTimeoutError(OrchestratorError):
    """A lock could not be acquired within its bounded retries (not bad input: exit 75)."""

    exit_code = EXIT_LOCK_TIMEOUT


class OutsideRootError(OrchestratorError):
    """A path that resolves, through a link, outside the directory it must stay in."""


class UnsafeInputError(OrchestratorError):
    """A file the tool must read is not a regular file, is too big, or does not parse."""
