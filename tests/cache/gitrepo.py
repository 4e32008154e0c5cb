"""Git in the cache tests' repositories (not imported by the child processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import GIT_IDENTITY


def git(root: Path, *args: str) -> None:
    """Run git in ``root`` as the test identity; it must succeed."""
    subprocess.run(["git", *GIT_IDENTITY, *args], cwd=root, check=True, capture_output=True)
