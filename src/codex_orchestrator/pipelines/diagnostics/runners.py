"""Python task runners a project declares: tox environments and nox sessions, by name.

An environment or session whose commands rewrite files (`fixers`) is passed over: tox-dev's
``fix`` environment runs pre-commit, nox's own ``lint`` session too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from codex_orchestrator.pipelines.diagnostics.checks import Run
from codex_orchestrator.pipelines.diagnostics.fixers import MAX_COMMANDS_CHARS, rewrites_files
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles, parse_toml

#: Environment/session names that mean each stage, in order of preference: check-only names
#: first, then type checkers. Never ``fix``, ``format`` or ``pre-commit``: those rewrite files.
NAMES = {
    "build": ("build",),
    "lint": ("lint", "linting", "style", "ruff", "flake8", "check", "type", "typing", "mypy"),
    "test": ("test", "tests", "unit", "pytest"),
}
#: Names that usually mean a fixer: never chosen, named in the stage's ``why`` when they are.
FIXER_NAMES = {"lint": ("fix", "format", "fmt", "pre-commit", "precommit")}
# tox environments named for a Python version (py, py312, pypy3, 3.13, 3.14t, py311-django):
# ``tox -e py`` runs the test environment with the interpreter tox runs on.
_PYTHON_FACTOR = re.compile(r"^(py\d*|pypy\d*|\d+\.\d+t?)(-|$)")
_NOX_SESSION = re.compile(
    r"^@(?:nox\.)?session\b(?P<args>[^\n]*)\n(?:@[^\n]*\n)*(?:async\s+)?def\s+(?P<name>\w+)",
    re.MULTILINE,
)
_ENVLIST_ITEM = re.compile(r"(?:[^,\s{]|\{[^{}]*\})+")
_BRACES = re.compile(r"\{([^{}]*)\}")
MAX_EXPANSION = 256
_NOX_NAME = re.compile(r"\bname\s*=\s*['\"]([\w.-]+)['\"]")
# The end of a session's body: the next decorator or top-level statement.
_TOP_LEVEL = re.compile(r"^\S", re.MULTILINE)
# A ``session.run(...)`` call's arguments (bounded: an unclosed call never scans the file).
_SESSION_RUN = re.compile(r"\bsession\.run\w*\(([^)]{0,1024})\)")


class Runner:
    """A task runner found at the root: the tool, the file that configures it, and its
    environments or sessions by name, each with its commands' text ("" when unknown)."""

    def __init__(self, tool: str, source: str, envs: Mapping[str, str], py_envs: bool) -> None:
        self.tool = tool
        self.source = source
        self.envs = envs
        self.py_envs = py_envs
        self.kind = "environment" if tool == "tox" else "session"

    def check(self, stage_id: str) -> Run | None:
        """The environment or session named for ``stage_id`` that rewrites no file, if any."""
        flag = "-e" if self.tool == "tox" else "-s"
        for name in NAMES.get(stage_id, ()):
            if name in self.envs and rewrites_files(self.envs[name]) is None:
                why = f"{self.source} declares a {self.tool} {self.kind} '{name}'"
                return Run(f"{self.tool} {flag} {name}", why, (self.tool,), self.tool)
        if stage_id == "test" and self.py_envs:
            why = (
                f"{self.source} declares Python-version test environments; 'py' is the current one"
            )
            return Run("tox -e py", why, ("tox",), "tox")
        return None

    def passed_over(self, stage_id: str) -> list[str]:
        """The environments or sessions named for ``stage_id`` not chosen, and why."""
        found = []
        for name in NAMES.get(stage_id, ()) + FIXER_NAMES.get(stage_id, ()):
            fixer = rewrites_files(self.envs.get(name, ""))
            if fixer is not None:
                found.append(f"{self.tool} {self.kind} '{name}' runs {fixer}, which rewrites files")
        return found


def find_runners(repo: RepoFiles, pyproject: Mapping[str, object]) -> list[Runner]:
    """tox first, then nox: each when its configuration is at the root."""
    runners = []
    tox = _tox(repo, pyproject)
    if tox is not None:
        runners.append(tox)
    if repo.has_file("noxfile.py"):
        runners.append(Runner("nox", "noxfile.py", _nox_sessions(repo.text("noxfile.py")), False))
    return runners


def _nox_sessions(text: str) -> dict[str, str]:
    """Each session's name and its ``session.run`` calls' arguments, one call a line."""
    sessions = {}
    for match in _NOX_SESSION.finditer(text):
        named = _NOX_NAME.search(match["args"])
        end = _TOP_LEVEL.search(text, match.end())
        body = text[match.end() : end.start() if end else len(text)][:MAX_COMMANDS_CHARS]
        calls = "\n".join(call.group(1) for call in _SESSION_RUN.finditer(body))
        sessions[named.group(1) if named else match["name"]] = calls
    return sessions


def _tox(repo: RepoFiles, pyproject: Mapping[str, object]) -> Runner | None:
    if repo.has_file("tox.toml"):
        envs = _toml_envs(parse_toml(repo.text("tox.toml"), "tox.toml")[0] or {})
        return _tox_runner("tox.toml", envs)
    if repo.has_file("tox.ini"):
        return _tox_runner("tox.ini", _ini_envs(repo.text("tox.ini"), "tox"))
    tool = pyproject.get("tool")
    tox = tool.get("tox") if isinstance(tool, dict) else None
    if isinstance(tox, dict):
        legacy = tox.get("legacy_tox_ini")
        envs = _ini_envs(legacy, "tox") if isinstance(legacy, str) else _toml_envs(tox)
        return _tox_runner("pyproject.toml [tool.tox]", envs)
    if "[tox:tox]" in repo.text("setup.cfg"):
        return _tox_runner("setup.cfg [tox:tox]", _ini_envs(repo.text("setup.cfg"), "tox:tox"))
    return None


def _tox_runner(source: str, envs: dict[str, str]) -> Runner:
    py_envs = any(_PYTHON_FACTOR.match(name) for name in envs)
    return Runner("tox", source, envs, py_envs)


def _toml_envs(config: Mapping[str, object]) -> dict[str, str]:
    """Environments by name, each with its ``commands`` (else the base's), one a line."""
    envs: dict[str, str] = {}
    base = _toml_commands(config.get("env_run_base"))
    env_list = config.get("env_list")
    if isinstance(env_list, list):
        envs.update((name, base) for name in env_list if isinstance(name, str))
    declared = config.get("env")
    if isinstance(declared, dict):
        for name, env in declared.items():
            commands = _toml_commands(env)
            envs[name] = commands if isinstance(env, dict) and "commands" in env else base
    return envs


def _toml_commands(env: object) -> str:
    commands = env.get("commands") if isinstance(env, dict) else None
    if not isinstance(commands, list):
        return ""
    lines = (c if isinstance(c, list) else [c] for c in commands)
    return "\n".join(" ".join(str(word) for word in line) for line in lines)


def _ini_envs(text: str, section: str) -> dict[str, str]:
    """Environments by name, each with its ``commands`` (else ``[testenv]``'s)."""
    import configparser  # only for projects with an INI tox configuration

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    base = parser.get("testenv", "commands", fallback="")
    envs: dict[str, str] = {}
    envlist = parser.get(section, "envlist", fallback="") or parser.get(
        section, "env_list", fallback=""
    )
    for item in _ENVLIST_ITEM.findall(envlist):
        envs.update(dict.fromkeys(_expand(item.replace(" ", "")), base))
    for name in parser.sections():
        if name.startswith("testenv:"):
            envs[name.removeprefix("testenv:")] = parser.get(name, "commands", fallback=base)
    return envs


def _expand(item: str) -> set[str]:
    """tox brace expansion of one envlist item: ``py{311,312}-lint`` -> py311-lint, py312-lint.

    Bounded: a hostile envlist (many braces) stops at `MAX_EXPANSION` names.
    """
    found = {item}
    while any("{" in name for name in found) and len(found) < MAX_EXPANSION:
        expanded = set()
        for name in found:
            match = _BRACES.search(name)
            if match is None:
                expanded.add(name)
                continue
            for choice in match.group(1).split(","):
                expanded.add(name[: match.start()] + choice + name[match.end() :])
        found = expanded
    return {name for name in found if "{" not in name}
