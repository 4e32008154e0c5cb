"""What the package index and a new user get: the built distributions' metadata and files, a
README whose links work off GitHub, install commands that name the right distribution, and a
test command that works from a fresh clone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from codex_orchestrator.commands.mcp import INSTALL_HINT as MCP_HINT
from codex_orchestrator.executors.dask.connect import INSTALL_HINT as DASK_HINT

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "codex-pipeline-orchestrator"
REPOSITORY = "https://github.com/codex-orchestrator/codex-orchestrator"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
README = (REPO / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel `python -m build` makes of this checkout's files.

    Built from a copy of the files git would commit, as in a fresh clone: an ``egg-info`` left
    by an editable install lists files that setuptools would add whatever pyproject says.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    clone = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(clone)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_wheel_carries_name_classifiers_urls_license_py_typed_and_the_schema(
    built: tuple[Path, Path],
) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode("utf-8"))
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier")
    for expected in (
        "Operating System :: POSIX :: Linux",
        "Environment :: Console",
        "Topic :: Software Development :: Build Tools",
        "Typing :: Typed",
        "Programming Language :: Python :: 3.11",
    ):
        assert expected in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Changelog"}
    assert all(url.startswith(REPOSITORY) for url in urls.values())
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "codex-orchestrator = codex_orchestrator.cli:main" in entry_points
    assert sorted(metadata.get_all("Provides-Extra")) == ["dask", "mcp"]
    for required in (
        "codex_orchestrator/py.typed",
        "codex_orchestrator/schema/codex.orchestrator.schema.json",
    ):
        assert required in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_the_sdist_carries_the_license_py_typed_and_the_schema(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "LICENSE",
        "README.md",
        "src/codex_orchestrator/py.typed",
        "src/codex_orchestrator/schema/codex.orchestrator.schema.json",
    } <= names


def test_the_license_is_mit_for_the_developers() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "codex-orchestrator developers" in text
    assert PYPROJECT["project"]["license"] == "MIT"


def test_readme_links_and_images_are_absolute_so_they_work_on_the_package_index() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets
    relative = [target for target in targets if not target.startswith("https://")]
    assert relative == []


def test_readme_says_it_is_linux_only() -> None:
    assert "**Linux only**" in README


def test_the_readme_opens_with_two_commands_and_the_test_one_installs_the_dev_group() -> None:
    head = README.split("\n---\n", 1)[0]
    commands = [line.strip() for line in head.splitlines() if line.startswith("    ")]
    assert len(commands) == 2
    install_and_run, test = commands
    assert install_and_run.endswith("pip install -e . && codex-orchestrator start")
    assert "pip install -U 'pip>=25.1'" in test  # --group needs pip 25.1
    assert "pip install -e . --group dev" in test
    assert test.endswith("python -m pytest -q")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "'pip>=25.1'" in ci and "-e . --group dev" in ci


def test_dev_tools_are_a_dependency_group_not_an_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"dask", "mcp"}
    dev = " ".join(PYPROJECT["dependency-groups"]["dev"])
    for tool in (
        *("pytest", "pytest-xdist", "hypothesis", "ruff", "mypy", "playwright", "tox", "nox"),
        *("uv", "xmlschema", "jsonschema", "import-linter", "build", "setuptools"),
    ):
        assert re.search(rf"(^| ){re.escape(tool)}[<>=\[]", dev), tool
    for requirement in extras["dask"] + extras["mcp"] + PYPROJECT["build-system"]["requires"]:
        assert requirement in PYPROJECT["dependency-groups"]["dev"]


@pytest.mark.parametrize(("hint", "extra"), [(MCP_HINT, "mcp"), (DASK_HINT, "dask")])
def test_missing_extra_messages_name_the_distribution_and_a_pipx_inject(
    hint: str, extra: str
) -> None:
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in hint
    (requirement,) = PYPROJECT["project"]["optional-dependencies"][extra]
    assert f"pipx inject {DISTRIBUTION} '{requirement}'" in hint


def test_every_install_line_in_the_docs_names_the_distribution() -> None:
    texts = [README, *(path.read_text("utf-8") for path in (REPO / "docs").glob("*.md"))]
    texts.append((REPO / "examples" / "agent_diagnostics.py").read_text("utf-8"))
    for text in texts:
        for line in re.findall(r"(?:pip|pipx) (?:install|inject) [^\n`]*", text):
            if " -e " not in line and "'pip>=" not in line:
                assert DISTRIBUTION in line, line
    assert "pipx inject codex-pipeline-orchestrator 'mcp>=2.3,<3'" in README
