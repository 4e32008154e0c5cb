"""Stage keys: every component changes the key, and `explain` names what changed first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from codex_orchestrator.cache.key import Fingerprint, explain
from codex_orchestrator.cache.spec import CacheSpec

from .cache_kit import Stage, write


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    root = tmp_path / "root"
    for name in ("src/app.py", "src/lib.py", "src/old.py"):
        write(root, name, f"{name}\n")
    return Stage(
        root,
        tmp_path / "cache",
        CacheSpec(inputs=("src/**",), env=("PYTHONHASHSEED", "LANG")),
        env={"K": "V"},
        environ={"PYTHONHASHSEED": "0"},
        needs={"build": "sha256:" + "1" * 64},
        racy_margin_ns=0,
    )


def _changed(stage: Stage, **changes: object) -> tuple[Fingerprint, Fingerprint]:
    before = stage.fingerprint()
    after = (
        stage.fingerprint() if not changes else dataclasses.replace(stage, **changes).fingerprint()
    )
    return before, after


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"command": "make test -k x"}, "command changed"),
        ({"cwd": "src"}, "cwd changed"),
        ({"env": {"K": "W"}}, "env changed"),
        ({"env": {"K": "V", "L": ""}}, "env changed"),
        ({"environ": {"PYTHONHASHSEED": "1"}}, "env PYTHONHASHSEED changed"),
        ({"environ": {"PYTHONHASHSEED": "0", "LANG": ""}}, "env LANG changed"),  # absent → empty
        ({"environ": {}}, "env PYTHONHASHSEED changed"),  # set → absent
        ({"needs": {"build": "sha256:" + "2" * 64}}, "needs build changed"),
        (
            {"needs": {"build": "sha256:" + "1" * 64, "lint": "sha256:" + "3" * 64}},
            "needs lint changed",
        ),
        ({"needs": {}}, "needs build changed"),
        (
            {
                "spec": CacheSpec(
                    inputs=("src/**",), outputs=("out.xml",), env=("PYTHONHASHSEED", "LANG")
                )
            },
            "outputs changed",
        ),
        (
            {"spec": CacheSpec(inputs=("src/**",), env=("PYTHONHASHSEED", "LANG", "TZ"))},
            "env TZ changed",
        ),
    ],
)
def test_each_component_changes_the_key_and_is_named(
    stage: Stage, changes: dict[str, object], reason: str
) -> None:
    before, after = _changed(stage, **changes)
    assert before.key != after.key
    assert after.key.startswith("sha256:") and len(after.key) == 71
    assert explain(before, after) == reason


def test_the_same_stage_has_the_same_key(stage: Stage) -> None:
    before, after = _changed(stage)
    assert before.key == after.key
    assert explain(before, after) == "no entry"
    assert explain(None, after) == "no entry"


def test_unlisted_variables_and_env_order_do_not_matter(stage: Stage) -> None:
    before, after = _changed(stage, environ={"PYTHONHASHSEED": "0", "HOME": "/elsewhere"})
    assert before.key == after.key
    stage.env = {"A": "1", "B": "2"}
    before, after = _changed(stage, env={"B": "2", "A": "1"})
    assert before.key == after.key


def test_listed_values_are_never_stored_in_the_components(stage: Stage) -> None:
    stage.environ = {"PYTHONHASHSEED": "secret-value-123"}
    assert "secret-value-123" not in repr(stage.fingerprint().components.to_json())


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda root: write(root, "src/lib.py", "edited\n"), "src/lib.py modified"),
        (lambda root: write(root, "src/new.py"), "src/new.py added"),
        (lambda root: (root / "src/old.py").unlink(), "src/old.py deleted"),
        (lambda root: write(root, "src/a\nb.py"), '"src/a\\nb.py" added'),
    ],
)
def test_input_changes_are_named(stage: Stage, edit: object, reason: str) -> None:
    before = stage.fingerprint()
    edit(stage.root)  # type: ignore[operator]
    after = stage.fingerprint()
    assert explain(before, after) == reason


def test_the_first_input_change_in_path_order_wins(stage: Stage) -> None:
    before = stage.fingerprint()
    write(stage.root, "src/zzz.py")  # added, late in path order
    write(stage.root, "src/lib.py", "edited\n")  # modified
    (stage.root / "src/app.py").unlink()  # deleted, first in path order
    assert explain(before, stage.fingerprint()) == "src/app.py deleted"


def test_precedence_command_before_env_before_inputs(stage: Stage) -> None:
    before = stage.fingerprint()
    write(stage.root, "src/lib.py", "edited\n")
    stage.environ = {"PYTHONHASHSEED": "9"}
    assert explain(before, stage.fingerprint()) == "env PYTHONHASHSEED changed"
    stage.command = "other"
    assert explain(before, stage.fingerprint()) == "command changed"


def test_an_older_cache_format_is_named(stage: Stage) -> None:
    current = stage.fingerprint()
    old = Fingerprint(current.components._replace(format=0), current.inputs)
    assert old.key != current.key
    assert explain(old, current) == "cache format changed"


def test_a_previous_fingerprint_without_its_input_list(stage: Stage) -> None:
    before = stage.fingerprint()
    write(stage.root, "src/lib.py", "edited\n")
    assert explain(Fingerprint(before.components, None), stage.fingerprint()) == "inputs changed"
