"""A stage's ``cache`` declaration (docs/cache.md): what it reads, what it leaves, what it sees.

``parse_cache_spec`` checks the raw JSON value of a stage's ``cache`` key; every problem is a
`ConfigError` naming the JSON path (e.g. ``pipelines[0].stages[2].cache.inputs[1]``) and how to
fix it, like every other config error.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, NoReturn

from codex_orchestrator.cache.globs import GlobError, compile_glob
from codex_orchestrator.errors import ConfigError
from codex_orchestrator.records.layout import CONFIG_FILE
from codex_orchestrator.util.jsonio import child_path, json_type
from codex_orchestrator.util.suggest import closest

#: ``inputs`` as this string: the files git tracks plus untracked files it does not ignore.
GIT_INPUTS: Literal["git"] = "git"
CACHE_KEYS = ("inputs", "outputs", "env")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = '{"inputs": ["src/**/*.py"], "outputs": [], "env": []}'


class CacheSpec(NamedTuple):
    """A checked ``cache`` declaration; globs are normalised, lists keep their order."""

    #: Globs relative to the root, or ``"git"``.
    inputs: tuple[str, ...] | Literal["git"]
    #: Globs of the files a hit restores.
    outputs: tuple[str, ...] = ()
    #: Names of environment variables whose values are part of the key.
    env: tuple[str, ...] = ()

    @property
    def uses_git(self) -> bool:
        """Whether the inputs are the files git lists."""
        return self.inputs == GIT_INPUTS


def parse_cache_spec(raw: object, json_path: str) -> CacheSpec | None:
    """Check the value of a stage's ``cache`` key found at ``json_path``.

    ``false`` means no cache (None). Anything unusable raises `ConfigError`.
    """
    if raw is False:
        return None
    if raw is True:
        _fail(
            child_path(json_path, "inputs"),
            "missing required key (`cache: true` does not say what the stage reads)",
            f'give an object with "inputs", e.g. {_EXAMPLE}, or "inputs": "git"',
        )
    if not isinstance(raw, dict):
        _fail(json_path, f"expected an object, got {json_type(raw)}", f"give e.g. {_EXAMPLE}")
    for key in raw:
        if key not in CACHE_KEYS:
            _fail(child_path(json_path, key), "unknown key", _suggest(key))
    if "inputs" not in raw:
        _fail(
            child_path(json_path, "inputs"),
            "missing required key",
            'list the globs the stage reads, e.g. ["src/**/*.py"], or give "git"',
        )
    inputs_path = child_path(json_path, "inputs")
    inputs: tuple[str, ...] | Literal["git"]
    if raw["inputs"] == GIT_INPUTS:
        inputs = GIT_INPUTS
    elif isinstance(raw["inputs"], str):
        _fail(
            inputs_path,
            f'the only string allowed is "git", got {raw["inputs"]!r}',
            f"give an array of globs, e.g. [{raw['inputs']!r}]",
        )
    else:
        inputs = _read_globs(raw["inputs"], inputs_path, required=True)
    return CacheSpec(
        inputs=inputs,
        outputs=_read_globs(raw.get("outputs", []), child_path(json_path, "outputs")),
        env=_read_names(raw.get("env", []), child_path(json_path, "env")),
    )


def _read_globs(value: object, path: str, *, required: bool = False) -> tuple[str, ...]:
    items = _read_list(value, path, 'give an array of globs, e.g. ["src/**/*.py"]')
    if required and not items:
        _fail(path, "must list at least one glob", 'list what the stage reads, or give "git"')
    globs: list[str] = []
    for index, item in enumerate(items):
        where = child_path(path, index)
        text = _read_text(item, where, "give a glob relative to the root, e.g. 'src/**/*.py'")
        try:
            normal = compile_glob(text).text
        except GlobError as error:
            _fail(where, error.problem, error.fix)
        if normal not in globs:
            globs.append(normal)
    return tuple(globs)


def _read_names(value: object, path: str) -> tuple[str, ...]:
    items = _read_list(value, path, 'give an array of variable names, e.g. ["PYTHONHASHSEED"]')
    names: list[str] = []
    for index, item in enumerate(items):
        where = child_path(path, index)
        name = _read_text(item, where, "give a variable name, e.g. 'PYTHONHASHSEED'")
        if not _ENV_NAME.fullmatch(name):
            _fail(
                where,
                f"invalid environment variable name {name!r}",
                "use letters, digits and '_', not starting with a digit",
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _read_list(value: object, path: str, fix: str) -> list[object]:
    if not isinstance(value, list):
        _fail(path, f"expected an array, got {json_type(value)}", fix)
    return value


def _read_text(value: object, path: str, fix: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {json_type(value)}", fix)
    if "\0" in value:
        _fail(path, "contains a NUL character (\\u0000)", "remove it")
    if not value.strip():
        _fail(path, "must not be empty", fix)
    return value


def _suggest(key: str) -> str:
    match = closest(key, CACHE_KEYS)
    if match:
        return f"did you mean {match!r}?"
    return f"remove it (valid keys: {', '.join(CACHE_KEYS)})"


def _fail(path: str, problem: str, fix: str) -> NoReturn:
    raise ConfigError(f"{CONFIG_FILE}: {path}: {problem}; {fix}")
