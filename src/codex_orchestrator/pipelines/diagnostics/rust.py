"""Rust projects (``Cargo.toml``): ``cargo build``, ``cargo clippy``, ``cargo test``."""

from __future__ import annotations

from codex_orchestrator.pipelines.diagnostics.checks import Project, Run, manifest_project
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles, parse_toml

CHECKS = {
    "build": Run("cargo build", "Cargo.toml: cargo builds the crate", ("cargo",)),
    "lint": Run("cargo clippy", "Cargo.toml: clippy lints the crate", ("cargo", "cargo-clippy")),
    "test": Run("cargo test", "Cargo.toml: cargo runs its tests", ("cargo",)),
}


def detect(repo: RepoFiles) -> Project | None:
    """The Cargo package or workspace at the root, or None."""
    return manifest_project(repo, "Rust", "Cargo.toml", _problem, CHECKS)


def _problem(text: str) -> str | None:
    manifest, problem = parse_toml(text, "Cargo.toml")
    if manifest is not None and "package" not in manifest and "workspace" not in manifest:
        return "Cargo.toml has neither [package] nor [workspace]; fix the file"
    return problem
