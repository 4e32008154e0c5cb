"""The run report reads as the failure was printed: error files as JSON with their output
tails shown as lines (not one string of escapes), and the stage table names each command."""

from __future__ import annotations

import html
import json

import pytest

from conftest import Repo
from helpers.report import report

pytestmark = pytest.mark.slow


def test_error_file_tails_are_lines_and_the_table_has_a_command_column(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "main",
            "pipelines": [
                {
                    "id": "main",
                    "stages": [
                        {"id": "ok", "command": "echo fine"},
                        {"kind": "subpipeline", "id": "child", "pipeline": "other"},
                        {
                            "id": "unit",
                            "command": "echo first-line; echo 'second <b>line</b>'; exit 2",
                        },
                    ],
                },
                {"id": "other", "stages": [{"id": "inner", "command": "true"}]},
            ],
        }
    )
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    code, _, stderr = report(repo, run_id)
    assert code == 0, stderr
    page = (repo.root / ".runs/default/cli" / run_id / "report.html").read_text()
    errors = page.split("<h2>Error files</h2>", 1)[1].split("<h2>", 1)[0]
    assert "first-line\\n" not in errors  # no escaped newlines
    assert "first-line\nsecond &lt;b&gt;line&lt;/b&gt;\n" in errors  # the lines, escaped HTML
    assert "&lt;2 lines, shown below as details.stdout&gt;" in errors
    assert '"reason": "command-failed"' in html.unescape(errors)  # still the file's JSON
    stages = page.split("<h2>Stages</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<th>command</th>" in stages
    assert "<code>echo fine</code>" in stages and "sub-pipeline" in stages
