"""``cache`` declarations: every mistake is one config error with its JSON path and a fix."""

from __future__ import annotations

import pytest

from codex_orchestrator.cache.globs import GlobError, compile_glob
from codex_orchestrator.cache.spec import CacheSpec, parse_cache_spec
from codex_orchestrator.errors import ConfigError

AT = "pipelines[0].stages[2].cache"


def _error(raw: object) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_cache_spec(raw, AT)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("codex.orchestrator.json: ")
    return message


def test_a_full_declaration_is_normalised() -> None:
    spec = parse_cache_spec(
        {
            "inputs": ["src/**/*.py", "./tests//", "src/**/*.py", "pyproject.toml"],
            "outputs": ["coverage.xml"],
            "env": ["PYTHONHASHSEED", "_X1"],
        },
        AT,
    )
    assert spec == CacheSpec(
        inputs=("src/**/*.py", "tests", "pyproject.toml"),
        outputs=("coverage.xml",),
        env=("PYTHONHASHSEED", "_X1"),
    )


def test_git_inputs_and_defaults() -> None:
    spec = parse_cache_spec({"inputs": "git"}, AT)
    assert spec is not None and spec.uses_git
    assert spec.outputs == () and spec.env == ()
    assert parse_cache_spec(False, AT) is None


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        (True, [f"{AT}.inputs: missing required key", "cache: true", '"inputs"']),
        ({}, [f"{AT}.inputs: missing required key", '"git"']),
        ({"outputs": []}, [f"{AT}.inputs: missing required key"]),
        ({"inputs": ["a"], "input": ["b"]}, [f"{AT}.input: unknown key", "did you mean 'inputs'?"]),
        (
            {"inputs": ["a"], "zzz": 1},
            [f"{AT}.zzz: unknown key", "valid keys: inputs, outputs, env"],
        ),
        ("git", [f"{AT}: expected an object, got string"]),
        ({"inputs": "src/**"}, [f'{AT}.inputs: the only string allowed is "git"', "['src/**']"]),
        ({"inputs": 3}, [f"{AT}.inputs: expected an array, got number"]),
        ({"inputs": []}, [f"{AT}.inputs: must list at least one glob"]),
        ({"inputs": ["a", 7]}, [f"{AT}.inputs[1]: expected a string, got number"]),
        ({"inputs": ["a", " "]}, [f"{AT}.inputs[1]: must not be empty"]),
        ({"inputs": ["a\0b"]}, [f"{AT}.inputs[0]: contains a NUL character"]),
        ({"inputs": ["../x"]}, [f"{AT}.inputs[0]: '../x' leads outside the repository root"]),
        ({"inputs": ["a/../../b"]}, [f"{AT}.inputs[0]: 'a/../../b' leads outside"]),
        ({"inputs": ["/etc/passwd"]}, [f"{AT}.inputs[0]: absolute path '/etc/passwd'"]),
        ({"inputs": ["a/../b"]}, [f"{AT}.inputs[0]: '..' is not allowed", "'b'"]),
        ({"inputs": ["[z-a]"]}, [f"{AT}.inputs[0]: invalid glob '[z-a]'"]),
        ({"inputs": ["a"], "outputs": ["../out"]}, [f"{AT}.outputs[0]: '../out' leads outside"]),
        ({"inputs": ["a"], "outputs": {}}, [f"{AT}.outputs: expected an array, got object"]),
        ({"inputs": ["a"], "env": ["A-B"]}, [f"{AT}.env[0]: invalid environment variable name"]),
        ({"inputs": ["a"], "env": ["1A"]}, [f"{AT}.env[0]: invalid environment variable name"]),
        ({"inputs": ["a"], "env": [""]}, [f"{AT}.env[0]: must not be empty"]),
        ({"inputs": ["a"], "env": [None]}, [f"{AT}.env[0]: expected a string, got null"]),
    ],
)
def test_each_mistake_is_one_line_with_its_path(raw: object, needles: list[str]) -> None:
    message = _error(raw)
    for needle in needles:
        assert needle in message, message
    assert "; " in message  # every error says how to fix it


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("src/**/*.py", ["src/a.py", "src/x/y/b.py", "src/.hidden.py"], ["a.py", "src/a.pyc"]),
        ("**/*.py", ["a.py", "d/e/f.py"], ["a.txt"]),
        ("src/*", ["src/a", "src/.env"], ["src/a/b", "srcx/a"]),
        ("src/?.c", ["src/a.c"], ["src/ab.c", "src//.c"]),
        ("f[0-9].txt", ["f1.txt"], ["fa.txt", "f10.txt"]),
        ("f[!0-9].txt", ["fa.txt"], ["f1.txt", "f/.txt"]),
        ("[*].txt", ["*.txt"], ["a.txt"]),
        ("odd[.txt", ["odd[.txt"], ["oddx.txt"]),
        ("a/**", ["a", "a/b", "a/b/c"], ["ab", "b/a"]),
        ("**", ["x", "x/y"], []),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]),
    ],
)
def test_glob_semantics(glob: str, matching: list[str], not_matching: list[str]) -> None:
    compiled = compile_glob(glob)
    for path in matching:
        assert compiled.matches(path), (glob, path)
    for path in not_matching:
        assert not compiled.matches(path), (glob, path)


def test_glob_bases_limit_the_walk() -> None:
    assert compile_glob("src/lib/**/*.py").base == "src/lib"
    assert compile_glob("src/*/x.py").base == "src"
    assert compile_glob("pyproject.toml").base == ""
    deep = compile_glob("src/*/x.py")
    assert deep.may_match_below("src") and deep.may_match_below("src/a")
    assert not deep.may_match_below("src/a/b")
    assert not deep.may_match_below("docs")
    with pytest.raises(GlobError):
        compile_glob("/abs")
