"""Rust projects (``Cargo.toml``): ``cargo build``, ``cargo clippy``, ``cargo test``."""

from __future__ import annotations

from codex_orchestrator.diagnostics.checks import Project, Run, broken_project
from codex_orchestrator.diagnostics.repo import RepoFiles, parse_toml


def detect(repo: RepoFiles) -> Project | None:
    """The Cargo package or workspace at the root, or None."""
    text, problem = repo.read("Cargo.toml")
    if text is None and problem is None:
        return None
    if text is not None:
        manifest, problem = parse_toml(text, "Cargo.toml")
        if manifest is not None and "package" not in manifest and "workspace" not in manifest:
            problem = "Cargo.toml has neither [package] nor [workspace]; fix the file"
    if problem is not None:
        return broken_project("Rust", "Cargo.toml", problem)
    return Project(
        "Rust",
        "Cargo.toml",
        {
            "build": Run("cargo build", "Cargo.toml: cargo builds the crate", ("cargo",)),
            "lint": Run(
                "cargo clippy", "Cargo.toml: clippy lints the crate", ("cargo", "cargo-clippy")
            ),
            "test": Run("cargo test", "Cargo.toml: cargo runs its tests", ("cargo",)),
        },
    )
