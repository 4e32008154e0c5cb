"""Load and validate ``codex.orchestrator.json`` at the repository root (docs/configuration.md).

Everything is checked before anything runs; a problem raises `ConfigError` with one line
``codex.orchestrator.json: <json path>: <problem>; <how to fix>`` (invalid JSON:
``codex.orchestrator.json:<line>:<column>: invalid JSON: <reason>``).

Configs written for the TypeScript codex-orchestrator load unchanged: pipelines may carry
``tags``, ``metadata`` and ``guardrailsRequired``; ``{"kind": "stage-set", "ref": NAME}`` is
replaced by the stages of ``stageSets[NAME]``; ``timeoutMs`` is accepted beside
``timeoutSeconds``. Keys in `IGNORED_KEYS` (features this tool does not have) are ignored
wherever they are not valid keys, with one warning each in `Config.warnings`; any other
unknown key is an error that suggests the nearest valid key.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple, NoReturn, TypeVar

from codex_orchestrator.errors import ConfigError
from codex_orchestrator.pipelines.graph import GraphError, StageNode, located_path, validate
from codex_orchestrator.pipelines.model import (
    BUILTIN_PIPELINE,
    CommandStage,
    Config,
    Pipeline,
    Pipelines,
    Stage,
    SubpipelineStage,
)
from codex_orchestrator.records.layout import CONFIG_FILE
from codex_orchestrator.records.workspace import (
    BOOLEAN_SETTINGS,
    CACHE_DIR_SETTING,
    DIAGNOSTICS_CACHE_SETTING,
    SETTING_NAMES,
    check_setting,
)
from codex_orchestrator.util.ids import ID_RULE, is_valid_id
from codex_orchestrator.util.jsonio import child_path as _child
from codex_orchestrator.util.jsonio import json_type as _json_type
from codex_orchestrator.util.jsonio import loads_checked
from codex_orchestrator.util.safefs import CONFIG_SIZE_LIMIT, read_regular
from codex_orchestrator.util.suggest import closest

if TYPE_CHECKING:
    from codex_orchestrator.cache.spec import CacheSpec

__all__ = [
    "BUILTIN_PIPELINE",
    "CONFIG_FILE",
    "CommandStage",
    "Config",
    "Pipeline",
    "Stage",
    "SubpipelineStage",
    "load_config",
]

MAX_TIMEOUT_SECONDS = 7 * 86400
MAX_RETRIES = 10
#: The longest wait before a retry, whatever ``retryDelaySeconds`` and the attempt number: the
#: config refuses a longer first delay and the stage loop caps the doubled ones at it.
MAX_RETRY_DELAY_SECONDS = 60.0
MAX_PARALLEL_LIMIT = 1024
MIRROR_PLACEHOLDER = "{task}"

#: Keys of TypeScript codex-orchestrator features this tool does not have: ignored, with a
#: warning, wherever they are not valid keys (e.g. ``description`` on a stage).
IGNORED_KEYS = frozenset(
    {
        "approvalPolicy",
        "approvals",
        "cloud",
        "delegation",
        "description",
        "execution",
        "guardrails",
        "inputs",
        "metadata",
        "model",
        "outputs",
        "plan",
        "provider",
        "retries",
        "review",
        "runtimeMode",
        "sandbox",
        "session",
        "telemetry",
    }
)

TOP_LEVEL_KEYS = frozenset(
    {"$schema", "defaultPipeline", "settings", "pipelines", "tasks", "stageSets"}
)
PIPELINE_KEYS = frozenset(
    {
        "id",
        "title",
        "description",
        "stages",
        "tags",
        "metadata",
        "guardrailsRequired",
        "maxParallel",
        "failFast",
    }
)
STAGE_KEYS: Mapping[str, frozenset[str]] = {
    "command": frozenset(
        {
            "kind",
            "id",
            "title",
            "command",
            "cwd",
            "env",
            "allowFailure",
            "summaryHint",
            "timeoutSeconds",
            "timeoutMs",
            "resources",
            "needs",
            "retries",
            "retryDelaySeconds",
            "cache",
        }
    ),
    "subpipeline": frozenset({"kind", "id", "title", "pipeline", "optional", "needs"}),
    "stage-set": frozenset({"kind", "ref"}),
}
_ALL_STAGE_KEYS = frozenset().union(*STAGE_KEYS.values())
#: Names of the orchestrator's environment variables a remote stage receives as they are.
PASS_ENV_SETTING = "dask_pass_env"
#: The files of a TLS link to a Dask scheduler: CA, certificate, key (all or none).
TLS_SETTINGS = ("dask_tls_ca_file", "dask_tls_cert", "dask_tls_key")
#: Settings that choose the executor (docs/executors.md): strings (and `PASS_ENV_SETTING`, a
#: list of names), unlike the numeric tunables.
EXECUTOR_SETTINGS = frozenset(
    {
        "executor",
        "dask_scheduler",
        "worker_root",
        *TLS_SETTINGS,
        PASS_ENV_SETTING,
    }
)
#: Config formats other tools read that this one does not (see `load_config`).
FOREIGN_CONFIG_EXTENSIONS = ("yaml", "yml", "toml")
#: Settings that are paths (relative to the root, or absolute).
PATH_SETTINGS = frozenset({CACHE_DIR_SETTING})
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_RESOURCE_AMOUNT = 1e6

T = TypeVar("T")
D = TypeVar("D")


def load_config(root: Path) -> Config:
    """Read and validate ``root/codex.orchestrator.json``; only the builtin pipeline if absent.
    A config in another format beside it (or instead of it) is never read, and gets a warning."""
    config = _load_json_config(root)
    foreign = _foreign_config_warnings(root, config.path is not None)
    return config._replace(warnings=(*foreign, *config.warnings)) if foreign else config


def _load_json_config(root: Path) -> Config:
    path = root / CONFIG_FILE
    try:
        raw = read_regular(path, CONFIG_SIZE_LIMIT)
    except FileNotFoundError:
        return _builtin_only(root)
    except OSError as exc:
        raise ConfigError(
            f"{CONFIG_FILE}: cannot read: {exc.strerror}; make it a readable file"
        ) from None
    document = loads_checked(raw, CONFIG_FILE, strict=True, error=ConfigError)
    return _ConfigParser(root).parse(document, path)


def _foreign_config_warnings(root: Path, has_json: bool) -> list[str]:
    """One warning per ``codex.orchestrator.yaml``/``.yml``/``.toml`` in ``root``: users of
    tools that read those formats expect them to count, and silence would hide that."""
    stem = CONFIG_FILE.removesuffix(".json")
    found = [
        f"{stem}.{ext}" for ext in FOREIGN_CONFIG_EXTENSIONS if (root / f"{stem}.{ext}").exists()
    ]
    fix = (
        f"only {CONFIG_FILE} is read; move its settings there and remove it"
        if has_json
        else f"only {CONFIG_FILE} is read; convert it to JSON under that name"
    )
    return [f"{name}: ignored; {fix}" for name in found]


def _builtin_only(root: Path) -> Config:
    return Config(
        path=None,
        default_pipeline=None,
        settings={},
        pipelines=_with_builtins({}, root, {}, tasks_configured=False),
        tasks={},
        warnings=(),
    )


def _with_builtins(
    configured: Mapping[str, Pipeline],
    root: Path,
    settings: Mapping[str, object],
    tasks_configured: bool,
) -> Pipelines:
    """The configured pipelines plus the built-in ``diagnostics``, made only when looked up
    (``tasks_configured``: the config has a ``tasks`` key, one way to opt in to spec-guard)."""

    def diagnostics() -> Pipeline:
        from codex_orchestrator.pipelines.diagnostics import builtin_diagnostics

        return builtin_diagnostics(
            root, tasks_configured, cache=settings.get(DIAGNOSTICS_CACHE_SETTING) is True
        )

    return Pipelines(configured, {BUILTIN_PIPELINE: diagnostics})


# --- error helpers -------------------------------------------------------------------------


def _cache_spec(value: object, path: str) -> CacheSpec | None:
    """A stage's ``cache`` declaration; the cache's parser is imported only by a config that
    declares one (every command reads the config: its start-up stays as it was)."""
    from codex_orchestrator.cache.spec import parse_cache_spec

    return parse_cache_spec(value, path)


def _fail(path: str, problem: str, fix: str) -> NoReturn:
    raise ConfigError(f"{CONFIG_FILE}: {path}: {problem}; {fix}")


def _suggest(key: str, candidates: frozenset[str]) -> str:
    match = closest(key, candidates)
    if match:
        return f"did you mean {match!r}?"
    return f"remove it (valid keys: {', '.join(sorted(candidates))})"


def _one_of(names: list[str]) -> str:
    return f"use one of: {', '.join(names)}"


# --- value readers: (value, json path) -> checked value ------------------------------------


def _read_object(value: object, path: str, fix: str = "give an object") -> dict[str, object]:
    if not isinstance(value, dict):
        _fail(path, f"expected an object, got {_json_type(value)}", fix)
    return value


def _read_list(value: object, path: str, fix: str = "give an array") -> list[object]:
    if not isinstance(value, list):
        _fail(path, f"expected an array, got {_json_type(value)}", fix)
    return value


def _read_string(value: object, path: str, fix: str = "give a string") -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {_json_type(value)}", fix)
    if "\0" in value:
        _fail(
            path,
            "contains a NUL character (\\u0000)",
            "remove it; no command, path or name may hold one",
        )
    return value


def _read_text(value: object, path: str, fix: str = "give a non-empty string") -> str:
    text = _read_string(value, path, fix)
    if not text.strip():
        _fail(path, "must not be empty", fix)
    return text


def _read_title(value: object, path: str) -> str:
    return _read_text(value, path, "give a short human-readable title")


def _read_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_json_type(value)}", "use true or false")
    return value


def _read_positive(value: object, path: str, fix: str, limit: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a number, got {_json_type(value)}", fix)
    try:
        number = float(value)
    except OverflowError:
        _fail(path, "is far too large", fix)
    if not (math.isfinite(number) and number > 0):
        _fail(path, f"must be greater than 0, got {value}", fix)
    if number > limit:
        _fail(path, f"must be at most {limit:g}, got {value}", fix)
    return number


def _read_id(value: object, path: str, kind: str) -> str:
    text = _read_string(value, path, f"give the {kind} id as a string; {ID_RULE}")
    if not is_valid_id(text):
        _fail(path, f"invalid {kind} id {text!r}", ID_RULE)
    return text


def _read_tags(value: object, path: str) -> tuple[str, ...]:
    items = _read_list(value, path, "give a list of strings")
    return tuple(_read_string(tag, f"{path}[{index}]") for index, tag in enumerate(items))


def _read_env(value: object, path: str) -> dict[str, str]:
    env = _read_object(value, path, 'give an object of strings, e.g. {"KEY": "value"}')
    for name, setting in env.items():
        where = _child(path, name)
        if not name or "=" in name or "\0" in name:
            _fail(where, f"invalid environment variable name {name!r}", "use a name without '='")
        _read_string(setting, where, 'environment values must be strings; quote it, e.g. "1"')
    return {name: str(setting) for name, setting in env.items()}


def _require(obj: Mapping[str, object], key: str, path: str, fix: str) -> object:
    if key not in obj:
        _fail(_child(path, key), "missing required key", fix)
    return obj[key]


def _optional(
    obj: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T], default: D
) -> T | D:
    return read(obj[key], _child(path, key)) if key in obj else default


# --- the parser ----------------------------------------------------------------------------


class _Located(NamedTuple):
    """A parsed stage with the JSON path that defined it (and the stage-set entry, if any)."""

    path: str
    stage: Stage
    via: str | None = None


class _StageSetRef(NamedTuple):
    """A ``{"kind": "stage-set", "ref": NAME}`` entry, expanded by the pipeline that holds it."""

    path: str
    name: str


_StageSets = Mapping[str, list[_Located]]


class _ConfigParser:
    """Validates one parsed document; collects warnings for ignored keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignored: dict[str, list[str]] = {}

    def parse(self, document: object, path: Path) -> Config:
        top = _read_object(document, "top level", "make the file one JSON object")
        self._check_keys(top, "", TOP_LEVEL_KEYS)
        _optional(top, "$schema", "", _read_string, None)
        settings = _optional(top, "settings", "", _read_settings, {})
        tasks = _optional(top, "tasks", "", _read_object, {})
        stage_sets = _optional(top, "stageSets", "", self._stage_sets, {})
        parsed = _optional(
            top, "pipelines", "", lambda value, path: self._pipelines(value, path, stage_sets), {}
        )
        pipelines = _with_builtins(
            {pipeline_id: pipeline for pipeline_id, (pipeline, _) in parsed.items()},
            self.root,
            settings,
            tasks_configured="tasks" in top,
        )
        _check_subpipelines(parsed, list(pipelines))
        _check_graphs(parsed)
        _check_stage_set_subpipelines(stage_sets, list(pipelines))
        default = _optional(top, "defaultPipeline", "", _read_default_id, None)
        if default is not None and default not in pipelines:
            _fail("defaultPipeline", f"unknown pipeline {default!r}", _one_of(list(pipelines)))
        return Config(
            path=path,
            default_pipeline=default,
            settings=settings,
            pipelines=pipelines,
            tasks=tasks,
            warnings=tuple(self._warnings()),
            mirrors=_optional(tasks, "mirrors", "tasks", _read_mirrors, None),
        )

    def _check_keys(
        self, obj: Mapping[str, object], path: str, allowed: frozenset[str], kind: str | None = None
    ) -> None:
        for key in obj:
            if key in allowed:
                continue
            where = _child(path, key)
            if kind is not None and key in _ALL_STAGE_KEYS:
                _misplaced_stage_key(where, key, kind)
            if key in IGNORED_KEYS:
                places = self.ignored.setdefault(key, [])
                if where not in places:
                    places.append(where)
                continue
            _fail(where, "unknown key", _suggest(key, _ALL_STAGE_KEYS if kind else allowed))

    def _warnings(self) -> list[str]:
        """One warning per ignored key, naming where it first appears."""
        warnings = []
        for key, places in self.ignored.items():
            more = f" (and {len(places) - 1} more places)" if len(places) > 1 else ""
            warnings.append(
                f"{CONFIG_FILE}: {places[0]}{more}: ignored; {key!r} belongs to a TypeScript "
                "codex-orchestrator feature this tool does not have"
            )
        return warnings

    def _stage_sets(self, value: object, path: str) -> dict[str, list[_Located]]:
        sets = _read_object(value, path, "map each stage-set name to a list of stages")
        parsed: dict[str, list[_Located]] = {}
        for name, stages in sets.items():
            set_path = _child(path, name)
            items = _read_list(stages, set_path, "give the stage set as a list of stages")
            parsed[name] = [
                self._set_member(raw, f"{set_path}[{index}]") for index, raw in enumerate(items)
            ]
        return parsed

    def _pipelines(
        self, value: object, path: str, stage_sets: _StageSets
    ) -> dict[str, tuple[Pipeline, list[_Located]]]:
        items = _read_list(value, path, "give a list of pipeline objects")
        parsed: dict[str, tuple[Pipeline, list[_Located]]] = {}
        first_at: dict[str, str] = {}
        for index, raw in enumerate(items):
            where = f"{path}[{index}]"
            pipeline, stages = self._pipeline(raw, where, stage_sets)
            if pipeline.id in first_at:
                _fail(
                    f"{where}.id",
                    f"duplicate pipeline id {pipeline.id!r} (first at {first_at[pipeline.id]})",
                    "give each pipeline a unique id",
                )
            first_at[pipeline.id] = where
            parsed[pipeline.id] = (pipeline, stages)
        return parsed

    def _pipeline(
        self, raw: object, path: str, stage_sets: _StageSets
    ) -> tuple[Pipeline, list[_Located]]:
        obj = _read_object(raw, path, "give each pipeline as an object with an id and stages")
        self._check_keys(obj, path, PIPELINE_KEYS)
        pipeline_id = _read_id(
            _require(obj, "id", path, "give the pipeline an id"), f"{path}.id", "pipeline"
        )
        stages_path = f"{path}.stages"
        raw_stages = _read_list(
            _require(obj, "stages", path, "give the pipeline a list of stages"),
            stages_path,
            "give a list of stage objects",
        )
        stages = self._expand(raw_stages, stages_path, stage_sets)
        pipeline = Pipeline(
            id=pipeline_id,
            title=_optional(obj, "title", path, _read_title, pipeline_id),
            description=_optional(obj, "description", path, _read_string, None),
            source="config",
            stages=tuple(located.stage for located in stages),
            tags=_optional(obj, "tags", path, _read_tags, ()),
            guardrails_required=_optional(obj, "guardrailsRequired", path, _read_bool, None),
            metadata=_optional(obj, "metadata", path, _read_object, {}),
            max_parallel=_optional(obj, "maxParallel", path, _read_max_parallel, None),
            fail_fast=_optional(obj, "failFast", path, _read_bool, False),
        )
        return pipeline, stages

    def _expand(self, items: list[object], path: str, stage_sets: _StageSets) -> list[_Located]:
        stages: list[_Located] = []
        for index, raw in enumerate(items):
            entry = self._entry(raw, f"{path}[{index}]")
            if isinstance(entry, _StageSetRef):
                stages.extend(
                    member._replace(via=entry.path) for member in _stage_set(entry, stage_sets)
                )
            else:
                stages.append(entry)
        if not stages:
            _fail(path, "a pipeline needs at least one stage", "add a stage")
        _check_unique_stage_ids(stages)
        return stages

    def _set_member(self, raw: object, path: str) -> _Located:
        obj, kind = self._stage_object(raw, path)
        if kind == "stage-set":
            _fail(
                f"{path}.kind",
                "a stage set cannot contain another stage set",
                "list its stages directly",
            )
        return self._located(obj, path, kind)

    def _entry(self, raw: object, path: str) -> _Located | _StageSetRef:
        obj, kind = self._stage_object(raw, path)
        if kind != "stage-set":
            return self._located(obj, path, kind)
        ref = _require(obj, "ref", path, "name the stage set to insert")
        return _StageSetRef(path, _read_string(ref, f"{path}.ref", "name a stage set"))

    def _stage_object(self, raw: object, path: str) -> tuple[dict[str, object], str]:
        obj = _read_object(raw, path, "give each stage as an object")
        kind = _optional(obj, "kind", path, _read_kind, "command")
        self._check_keys(obj, path, STAGE_KEYS[kind], kind)
        return obj, kind

    def _located(self, obj: Mapping[str, object], path: str, kind: str) -> _Located:
        if kind == "subpipeline":
            return _Located(path, _subpipeline_stage(obj, path))
        return _Located(path, self._command_stage(obj, path))

    def _command_stage(self, obj: Mapping[str, object], path: str) -> CommandStage:
        stage_id = _read_stage_id(obj, path)
        command = _require(obj, "command", path, "give the shell command to run")
        return CommandStage(
            id=stage_id,
            title=_optional(obj, "title", path, _read_title, stage_id),
            command=_read_text(command, f"{path}.command", "give the shell command to run"),
            cwd=_optional(obj, "cwd", path, self._read_cwd, None),
            env=_optional(obj, "env", path, _read_env, {}),
            allow_failure=_optional(obj, "allowFailure", path, _read_bool, False),
            summary_hint=_optional(obj, "summaryHint", path, _read_string, None),
            timeout_seconds=_read_timeout(obj, path),
            resources=_optional(obj, "resources", path, _read_resources, {}),
            needs=_optional(obj, "needs", path, _read_needs, None),
            retries=_optional(obj, "retries", path, _read_retries, 0),
            retry_delay_seconds=_optional(obj, "retryDelaySeconds", path, _read_retry_delay, 1.0),
            cache=_optional(obj, "cache", path, _cache_spec, None),
        )

    def _read_cwd(self, value: object, path: str) -> str:
        fix = "give a directory inside the repository, relative to its root"
        cwd = _read_text(value, path, fix)
        if os.path.isabs(cwd):
            _fail(path, f"absolute path {cwd!r} is not allowed", fix)
        root = self.root.resolve()
        if not (root / cwd).resolve().is_relative_to(root):
            _fail(path, f"{cwd!r} leads outside the repository root", fix)
        return cwd


def _misplaced_stage_key(path: str, key: str, kind: str) -> NoReturn:
    owners = [name for name, keys in STAGE_KEYS.items() if key in keys]
    problem = f"`{key}` belongs to {' and '.join(owners)} stages"
    if kind == "stage-set":
        _fail(path, problem, "a stage-set entry takes only `kind` and `ref`")
    _fail(path, problem, f'remove it, or set "kind": "{owners[0]}"')


def _read_kind(value: object, path: str) -> str:
    fix = _one_of([json.dumps(kind) for kind in STAGE_KEYS])
    kind = _read_string(value, path, fix)
    if kind not in STAGE_KEYS:
        _fail(path, f"unknown stage kind {kind!r}", fix)
    return kind


def _read_stage_id(obj: Mapping[str, object], path: str) -> str:
    return _read_id(_require(obj, "id", path, "give the stage an id"), f"{path}.id", "stage")


def _read_default_id(value: object, path: str) -> str:
    return _read_id(value, path, "pipeline")


def _read_settings(value: object, path: str) -> dict[str, object]:
    settings = _read_object(value, path, "give an object of tunables")
    checked: dict[str, object] = {}
    for name, setting in settings.items():
        where = _child(path, name)
        if name == PASS_ENV_SETTING:
            checked[name] = _read_env_names(setting, where)
            continue
        if name in EXECUTOR_SETTINGS:
            checked[name] = _read_text(setting, where, "give a non-empty string")
            continue
        if name in PATH_SETTINGS:
            checked[name] = _read_text(setting, where, "give a directory path")
            continue
        if name not in SETTING_NAMES:
            known = frozenset(SETTING_NAMES) | EXECUTOR_SETTINGS | PATH_SETTINGS
            _fail(where, "unknown setting", _suggest(name, known))
        checked[name] = _read_setting(name, setting, where)
    return checked


def _read_env_names(value: object, path: str) -> tuple[str, ...]:
    fix = 'give a list of environment variable names, e.g. ["HOME", "LANG"]'
    names = _read_list(value, path, fix)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
            _fail(f"{path}[{index}]", f"{name!r} is not an environment variable name", fix)
    return tuple(str(name) for name in names)


def _read_resources(value: object, path: str) -> dict[str, float]:
    """Abstract resources a stage needs on its worker (e.g. ``{"GPU": 1}``), for Dask."""
    fix = 'give an object of resource names and amounts, e.g. {"GPU": 1}'
    resources = _read_object(value, path, fix)
    return {
        _read_text(name, path, fix): _read_positive(
            amount, _child(path, name), fix, MAX_RESOURCE_AMOUNT
        )
        for name, amount in resources.items()
    }


def _read_mirrors(value: object, path: str) -> tuple[str, ...]:
    """Checklist mirror templates: relative paths inside the root, ``{task}`` at most once."""
    fix = 'give a list of relative paths such as ["tasks/tasks-{task}.md", "docs/TASKS.md"]'
    templates = _read_list(value, path, fix)
    if not templates:
        _fail(path, "must not be empty", fix)
    checked = []
    for index, raw in enumerate(templates):
        where = f"{path}[{index}]"
        template = _read_text(raw, where, fix)
        pure = PurePosixPath(template)
        if pure.is_absolute() or ".." in pure.parts:
            _fail(where, f"{template!r} leads outside the repository root", fix)
        if template.count(MIRROR_PLACEHOLDER) > 1:
            _fail(where, f"{template!r} has {MIRROR_PLACEHOLDER} more than once", fix)
        checked.append(template)
    return tuple(checked)


def _read_setting(name: str, value: object, path: str) -> float | int | bool:
    if name in BOOLEAN_SETTINGS:
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {_json_type(value)}", "give true or false")
        return bool(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a number, got {_json_type(value)}", "give a positive number")
    return check_setting(name, value, f"{CONFIG_FILE}: {path}")


def _read_timeout(obj: Mapping[str, object], path: str) -> float | None:
    if "timeoutSeconds" in obj and "timeoutMs" in obj:
        _fail(f"{path}.timeoutMs", "timeoutSeconds is also set", "keep only one of them")
    if "timeoutMs" in obj:
        fix = (
            f"give the timeout in milliseconds, above 0 and at most {MAX_TIMEOUT_SECONDS * 1000:g}"
        )
        limit = MAX_TIMEOUT_SECONDS * 1000
        return _read_positive(obj["timeoutMs"], f"{path}.timeoutMs", fix, limit) / 1000
    if "timeoutSeconds" in obj:
        fix = f"give the timeout in seconds, above 0 and at most {MAX_TIMEOUT_SECONDS:g}"
        limit = MAX_TIMEOUT_SECONDS
        return _read_positive(obj["timeoutSeconds"], f"{path}.timeoutSeconds", fix, limit)
    return None


def _subpipeline_stage(obj: Mapping[str, object], path: str) -> SubpipelineStage:
    stage_id = _read_stage_id(obj, path)
    pipeline = _require(obj, "pipeline", path, "name the pipeline to run as a child")
    return SubpipelineStage(
        id=stage_id,
        title=_optional(obj, "title", path, _read_title, stage_id),
        pipeline=_read_id(pipeline, f"{path}.pipeline", "pipeline"),
        optional=_optional(obj, "optional", path, _read_bool, False),
        needs=_optional(obj, "needs", path, _read_needs, None),
    )


def _stage_set(ref: _StageSetRef, stage_sets: _StageSets) -> list[_Located]:
    if ref.name not in stage_sets:
        fix = _one_of(list(stage_sets)) if stage_sets else "define it under stageSets"
        _fail(f"{ref.path}.ref", f"unknown stage set {ref.name!r}", fix)
    return stage_sets[ref.name]


def _check_unique_stage_ids(stages: list[_Located]) -> None:
    first_at: dict[str, str] = {}
    for located in stages:
        where = _stage_origin(located)
        stage_id = located.stage.id
        if stage_id in first_at:
            _fail(
                where,
                f"duplicate stage id {stage_id!r} (first at {first_at[stage_id]})",
                "give each stage of a pipeline a unique id",
            )
        first_at[stage_id] = where


def _stage_origin(located: _Located) -> str:
    return located_path(located.path, located.via, ".id")


def _check_subpipelines(
    pipelines: Mapping[str, tuple[Pipeline, list[_Located]]], available: list[str]
) -> None:
    """Every sub-pipeline stage names a known pipeline, and no chain of them loops."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for pipeline_id, (_, stages) in pipelines.items():
        edges[pipeline_id] = []
        for located in stages:
            if isinstance(located.stage, SubpipelineStage):
                where = f"{located.path}.pipeline"
                if located.stage.pipeline not in available:
                    _fail(where, f"unknown pipeline {located.stage.pipeline!r}", _one_of(available))
                edges[pipeline_id].append((located.stage.pipeline, where))
    _check_cycles(edges)


def _check_stage_set_subpipelines(stage_sets: _StageSets, available: list[str]) -> None:
    """Sub-pipeline stages of every stage set (used or not) name a known pipeline."""
    for members in stage_sets.values():
        for located in members:
            stage = located.stage
            if isinstance(stage, SubpipelineStage) and stage.pipeline not in available:
                where = f"{located.path}.pipeline"
                _fail(where, f"unknown pipeline {stage.pipeline!r}", _one_of(available))


def _check_cycles(edges: Mapping[str, list[tuple[str, str]]]) -> None:
    finished: set[str] = set()
    for start in edges:
        _visit(start, edges, [start], finished)


def _visit(
    node: str, edges: Mapping[str, list[tuple[str, str]]], chain: list[str], finished: set[str]
) -> None:
    if node in finished:
        return
    for child, where in edges.get(node, []):
        if child in chain:
            cycle = " -> ".join([*chain[chain.index(child) :], child])
            _fail(where, f"sub-pipeline cycle {cycle}", "remove one of these sub-pipeline stages")
        _visit(child, edges, [*chain, child], finished)
    finished.add(node)


# --- graph pipelines (docs/graphs.md) ------------------------------------------------------


def _read_whole(value: object, path: str, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a whole number, got {_json_type(value)}", fix)
    if isinstance(value, float) and not value.is_integer():
        _fail(path, f"must be a whole number, got {value}", fix)
    if not low <= value <= high:
        _fail(path, f"out of range, got {value}", fix)
    return int(value)


def _read_max_parallel(value: object, path: str) -> int:
    fix = f"give how many stages may run at once, a whole number from 1 to {MAX_PARALLEL_LIMIT}"
    return _read_whole(value, path, 1, MAX_PARALLEL_LIMIT, fix)


def _read_retries(value: object, path: str) -> int:
    fix = f"give how many times to re-run a failed attempt, a whole number from 0 to {MAX_RETRIES}"
    return _read_whole(value, path, 0, MAX_RETRIES, fix)


def _read_retry_delay(value: object, path: str) -> float:
    fix = f"give the first retry delay in seconds, from 0 to {MAX_RETRY_DELAY_SECONDS:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a number, got {_json_type(value)}", fix)
    if not 0 <= value <= MAX_RETRY_DELAY_SECONDS:  # also refuses NaN
        _fail(path, f"out of range, got {value}", fix)
    return float(value)


def _read_needs(value: object, path: str) -> tuple[str, ...]:
    fix = 'list the ids of stages of this pipeline, e.g. ["build"]'
    items = _read_list(value, path, fix)
    return tuple(_read_string(item, f"{path}[{index}]", fix) for index, item in enumerate(items))


def _check_graphs(pipelines: Mapping[str, tuple[Pipeline, list[_Located]]]) -> None:
    """Every ``needs`` names a stage of its own pipeline, and no chain of them loops."""
    owners: dict[str, str] = {}
    for pipeline_id, (_, stages) in pipelines.items():
        for located in stages:
            owners.setdefault(located.stage.id, pipeline_id)
    for _, stages in pipelines.values():
        if not any(located.stage.needs is not None for located in stages):
            continue
        own = {located.stage.id for located in stages}
        elsewhere = {stage_id: owner for stage_id, owner in owners.items() if stage_id not in own}
        nodes = [
            StageNode(located.stage.id, located.stage.needs, located.path, located.via)
            for located in stages
        ]
        try:
            validate(nodes, elsewhere)
        except GraphError as error:
            _fail(error.path, error.problem, error.fix)
