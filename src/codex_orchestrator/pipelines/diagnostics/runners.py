"""Python task runners a project declares: tox environments and nox sessions, by name."""

from __future__ import annotations

import re
from collections.abc import Mapping

from codex_orchestrator.pipelines.diagnostics.checks import Run
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles, parse_toml

#: Environment/session names that mean each stage, in order of preference. ``fix`` is what
#: tox-dev projects call their pre-commit lint environment.
NAMES = {
    "build": ("build",),
    "lint": ("lint", "linting", "style", "ruff", "flake8", "pre-commit", "precommit", "fix"),
    "test": ("test", "tests", "unit", "pytest"),
}
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


class Runner:
    """A task runner found at the root: the tool, the file that configures it, its names."""

    def __init__(self, tool: str, source: str, names: frozenset[str], py_envs: bool) -> None:
        self.tool = tool
        self.source = source
        self.names = names
        self.py_envs = py_envs

    def check(self, stage_id: str) -> Run | None:
        """The environment or session named for ``stage_id``, if any."""
        flag = "-e" if self.tool == "tox" else "-s"
        kind = "environment" if self.tool == "tox" else "session"
        for name in NAMES.get(stage_id, ()):
            if name in self.names:
                why = f"{self.source} declares a {self.tool} {kind} '{name}'"
                return Run(f"{self.tool} {flag} {name}", why, (self.tool,))
        if stage_id == "test" and self.py_envs:
            why = (
                f"{self.source} declares Python-version test environments; 'py' is the current one"
            )
            return Run("tox -e py", why, ("tox",))
        return None


def find_runners(repo: RepoFiles, pyproject: Mapping[str, object]) -> list[Runner]:
    """tox first, then nox: each when its configuration is at the root."""
    runners = []
    tox = _tox(repo, pyproject)
    if tox is not None:
        runners.append(tox)
    if repo.has_file("noxfile.py"):
        names = set()
        for match in _NOX_SESSION.finditer(repo.text("noxfile.py")):
            named = _NOX_NAME.search(match["args"])
            names.add(named.group(1) if named else match["name"])
        runners.append(Runner("nox", "noxfile.py", frozenset(names), py_envs=False))
    return runners


def _tox(repo: RepoFiles, pyproject: Mapping[str, object]) -> Runner | None:
    if repo.has_file("tox.toml"):
        names = _toml_envs(parse_toml(repo.text("tox.toml"), "tox.toml")[0] or {})
        return _tox_runner("tox.toml", names)
    if repo.has_file("tox.ini"):
        return _tox_runner("tox.ini", _ini_envs(repo.text("tox.ini"), "tox"))
    tool = pyproject.get("tool")
    tox = tool.get("tox") if isinstance(tool, dict) else None
    if isinstance(tox, dict):
        legacy = tox.get("legacy_tox_ini")
        names = _ini_envs(legacy, "tox") if isinstance(legacy, str) else _toml_envs(tox)
        return _tox_runner("pyproject.toml [tool.tox]", names)
    if "[tox:tox]" in repo.text("setup.cfg"):
        return _tox_runner("setup.cfg [tox:tox]", _ini_envs(repo.text("setup.cfg"), "tox:tox"))
    return None


def _tox_runner(source: str, names: set[str]) -> Runner:
    py_envs = any(_PYTHON_FACTOR.match(name) for name in names)
    return Runner("tox", source, frozenset(names), py_envs)


def _toml_envs(config: Mapping[str, object]) -> set[str]:
    names: set[str] = set()
    env_list = config.get("env_list")
    if isinstance(env_list, list):
        names.update(name for name in env_list if isinstance(name, str))
    envs = config.get("env")
    if isinstance(envs, dict):
        names.update(envs)
    return names


def _ini_envs(text: str, section: str) -> set[str]:
    import configparser  # only for projects with an INI tox configuration

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return set()
    names: set[str] = set()
    envlist = parser.get(section, "envlist", fallback="") or parser.get(
        section, "env_list", fallback=""
    )
    for item in _ENVLIST_ITEM.findall(envlist):
        names.update(_expand(item.replace(" ", "")))
    for name in parser.sections():
        if name.startswith("testenv:"):
            names.add(name.removeprefix("testenv:"))
    return names


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
