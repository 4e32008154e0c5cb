"""JUnit XML of real runs (view/junit.py), validated against tests/schemas/junit.xsd: the
element and attribute set Jenkins' JUnit plugin and GitLab read, written for this project."""

from __future__ import annotations

import json
import signal
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from codex_orchestrator.errors import CorruptManifestError
from codex_orchestrator.view.junit import LOG_TAIL_BYTES, LOG_TAIL_LINES, junit_xml, write_junit
from conftest import Repo, assert_usage_error
from helpers.processes import wait_for

XSD = Path(__file__).parent / "schemas" / "junit.xsd"
#: What a stage prints to test the document's escaping: XML's own delimiters, a CDATA end, a
#: script, NUL and other control bytes, an escape sequence, invalid UTF-8 (a lone byte, an
#: encoded surrogate, a cut sequence) and a character XML 1.0 forbids even when well encoded.
HOSTILE = (
    b'a]]>b <script>alert(1)</script> & "q" \'s\x00\x01\x08\x0b\x0c\x1b[31mred\x1b[0m'
    b"\x7f\xc2\x85 \xff \xed\xa0\x80 \xef\xbf\xbe \xe2\x80\n"
)


@cache
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def valid_junit(run_dir: Path) -> ET.Element:
    """The run's JUnit document, checked against the schema; its root element."""
    data = junit_xml(run_dir)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n")
    data.decode("utf-8")  # strict: every byte is UTF-8
    schema().validate(data.decode("utf-8"))
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    return root


def run_dir_of(repo: Repo, document: dict[str, Any]) -> Path:
    return (repo.root / document["manifest"]).parent


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in suite.iter("testcase")}


def counts(element: ET.Element) -> tuple[int, ...]:
    return tuple(int(element.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped"))


@pytest.mark.slow
def test_a_run_with_failures_timeouts_skips_and_a_child_run(repo: Repo) -> None:
    repo.write_config(
        {
            "pipelines": [
                {
                    "id": "child",
                    "stages": [
                        {"id": "c-ok", "command": "echo child says hi"},
                        {"id": "c-bad", "command": "echo child broke >&2; exit 3"},
                    ],
                },
                {
                    "id": "main",
                    "stages": [
                        {"id": "ok", "command": "echo out; echo err >&2"},
                        {"id": "lenient", "command": "echo nope; exit 1", "allowFailure": True},
                        {
                            "kind": "subpipeline",
                            "id": "sub",
                            "pipeline": "child",
                            "optional": True,
                        },
                        {"id": "hang", "command": "sleep 30", "timeoutSeconds": 0.5},
                        {"id": "never", "command": "true"},
                    ],
                },
            ]
        }
    )
    code, document = repo.start_json("main")
    assert code == 1
    root = valid_junit(run_dir_of(repo, document))

    main, child = root.findall("testsuite")
    assert (main.get("name"), child.get("name")) == ("main", "child")
    assert (main.get("id"), child.get("id")) == ("0", "1")
    assert counts(main) == (5, 1, 0, 3)  # hang failed; lenient, sub, never skipped
    assert counts(child) == (2, 1, 0, 0)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "2", "0")
    properties = {p.get("name"): p.get("value") for p in main.iter("property")}
    assert properties["run_id"] == document["run_id"]
    assert properties["status"] == "failed"
    assert properties["status_detail"] == "stage:hang:timeout"
    assert main.get("package") == "default" and main.get("hostname")
    assert main.get("timestamp", "").startswith(document["run_id"][:10])

    stages = cases(main)
    assert list(stages) == ["ok", "lenient", "sub", "hang", "never"]
    assert all(case.get("classname") == "main" for case in stages.values())
    ok = stages["ok"]
    assert list(ok) == [ok.find("system-out"), ok.find("system-err")]
    assert ok.findtext("system-out") == "out" and ok.findtext("system-err") == "err"

    hang = stages["hang"].find("failure")
    assert hang is not None
    assert hang.get("type") == "command-timeout"
    assert hang.get("message") == "timed out after 0.5s; exit 143"
    assert '"reason": "command-timeout"' in (hang.text or "")
    assert float(stages["hang"].get("time", "0")) >= 0.5

    lenient = stages["lenient"].find("skipped")
    assert lenient is not None and lenient.get("message") == "allowed-failure: nope"
    assert '"reason": "command-allow-failure"' in (lenient.text or "")
    sub = stages["sub"].find("skipped")
    assert sub is not None and (sub.get("message") or "").startswith("optional-failed: optional")
    assert stages["sub"].find("system-out") is None  # its output is in the child's suite
    never = stages["never"].find("skipped")
    assert never is not None and never.get("message") == "not run: the run ended failed first"
    assert list(stages["never"]) == [never]

    child_cases = cases(child)
    assert child_cases["c-bad"].find("failure").get("message") == "child broke"  # type: ignore[union-attr]
    assert child_cases["c-bad"].get("classname") == "child"
    assert child_cases["c-ok"].findtext("system-out") == "child says hi"


def test_hostile_output_stays_text_in_a_valid_document(repo: Repo, tmp_path: Path) -> None:
    (repo.root / "hostile.bin").write_bytes(HOSTILE)
    repo.pipeline(
        {"id": "evil", "command": "cat hostile.bin; cat hostile.bin >&2; exit 1"},
        {"id": "after", "command": "true"},
    )
    code, document = repo.start_json()
    assert code == 1
    root = valid_junit(run_dir_of(repo, document))

    case = cases(root)["evil"]
    for text in (case.findtext("system-out"), case.findtext("system-err")):
        assert text is not None
        assert 'a]]>b <script>alert(1)</script> & "q" \'s' in text  # text, not markup
        assert "\x1b" not in text and "[31m" not in text  # the escape sequence is dropped
        assert "\u2400\u2401\u2408" in text  # NUL, SOH, BS made visible
        assert "\ufffd" in text  # invalid UTF-8 and U+FFFE replaced
        assert "\ufffe" not in text
    failure = case.find("failure")
    assert failure is not None
    assert "<script>" in (failure.get("message") or "")
    assert "]]>" in (failure.text or "")

    target = tmp_path / "out" / "junit.xml"
    target.parent.mkdir()
    write_junit(run_dir_of(repo, document), target)
    assert target.read_bytes() == junit_xml(run_dir_of(repo, document))


def test_a_huge_log_is_cut_to_its_tail(repo: Repo) -> None:
    # 3 MB of numbered lines, then a last line to find.
    repo.pipeline(
        {"id": "loud", "command": "seq 1 400000 | sed 's/$/ lorem ipsum/'; echo the end; exit 1"}
    )
    code, document = repo.start_json()
    assert code == 1
    out = cases(valid_junit(run_dir_of(repo, document)))["loud"].findtext("system-out") or ""
    lines = out.split("\n")
    assert lines[0].startswith("[") and "earlier bytes of commands/01-loud.stdout.log" in lines[0]
    assert lines[-1] == "the end"
    assert lines[-2] == "400000 lorem ipsum"
    assert len(lines) == LOG_TAIL_LINES + 1
    assert len(out.encode()) <= LOG_TAIL_BYTES + 200


def test_one_huge_line_shows_its_end(repo: Repo) -> None:
    repo.pipeline({"id": "line", "command": "head -c 300000 /dev/zero | tr '\\0' x; echo END"})
    code, document = repo.start_json()
    assert code == 0
    out = cases(valid_junit(run_dir_of(repo, document)))["line"].findtext("system-out") or ""
    assert out.endswith("xxxEND")
    assert len(out.encode()) <= LOG_TAIL_BYTES + 200


def test_a_tampered_manifest_and_unreadable_records_still_give_a_valid_document(
    repo: Repo,
) -> None:
    repo.write_config(
        {
            "pipelines": [
                {"id": "kid", "stages": [{"id": "k", "command": "true"}]},
                {
                    "id": "main",
                    "stages": [
                        {"id": "bad", "command": "echo x; exit 1", "allowFailure": True},
                        {"kind": "subpipeline", "id": "sub", "pipeline": "kid"},
                    ],
                },
            ]
        }
    )
    code, document = repo.start_json("main")
    assert code == 0
    run_dir = run_dir_of(repo, document)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # Lone surrogates, a noncharacter and control characters in strings the manifest holds.
    manifest["pipeline_id"] = "main\ud800"
    manifest["commands"][0]["summary"] = "x\udfff\uffff\x1b]0;title\x07 done\r\n"
    manifest["host"] = "h\x00st"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "errors" / "01-bad.json").write_bytes(b"{not json")
    (run_dir / "commands" / "01-bad.stdout.log").unlink()
    child_manifest = repo.root / manifest["child_runs"][0]["manifest"]
    child_manifest.write_text("{")

    root = valid_junit(run_dir)
    main, child = root.findall("testsuite")
    assert main.get("name") == "main\ufffd" and main.get("hostname") == "h\u2400st"
    bad = cases(main)["bad"]
    skipped = bad.find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "allowed-failure: x\ufffd\ufffd done\u240d\u240a"
    assert "error file errors/01-bad.json is unreadable or corrupt" in (skipped.text or "")
    assert bad.findtext("system-out") == "[log commands/01-bad.stdout.log is missing]"
    assert counts(child) == (1, 0, 1, 0)
    error = child.find("testcase/error")
    assert error is not None and error.get("type") == "unreadable-child-run"
    assert "cannot be read" in (error.get("message") or "")


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorruptManifestError):
        junit_xml(tmp_path)


def test_a_run_in_progress_then_cancelled(repo: Repo) -> None:
    repo.pipeline(
        {"id": "first", "command": "echo started; sleep 30"}, {"id": "next", "command": "true"}
    )
    process = repo.spawn("start", "--format", "json")
    runs = repo.root / ".runs" / "default" / "cli"
    run_dir = wait_for(lambda: next(runs.glob("*/commands/01-first.stdout.log"), None)).parents[1]
    wait_for(lambda: b"started" in (run_dir / "commands" / "01-first.stdout.log").read_bytes())
    wait_for(lambda: '"running"' in (run_dir / "manifest.json").read_text())

    live = valid_junit(run_dir)
    first, following = cases(live).values()
    error = first.find("error")
    assert error is not None and error.get("type") == "running"
    assert error.get("message") == "did not finish: stage running, run in_progress"
    assert following.find("skipped").get("message") == "not run yet"  # type: ignore[union-attr]

    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    ended = cases(valid_junit(run_dir))
    cancelled = ended["first"].find("error")
    assert cancelled is not None and cancelled.get("type") == "cancelled"
    assert ended["first"].findtext("system-out") == "started"
    assert ended["next"].find("skipped").get("message") == (  # type: ignore[union-attr]
        "not run: the run ended cancelled first"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'<testcase name="ok"', b'<testcase rogue="1" name="ok"'),  # unknown attribute
        (b"<system-out>hi</system-out>", b"<stdout>hi</stdout>"),  # unknown element
        (b'tests="1"', b'tests="one"'),  # a count that is not a number
        (b'time="0.', b'time="-0.'),  # a negative time
        (b'classname="main" ', b""),  # classname is required
    ],
)
def test_the_schema_is_strict(repo: Repo, old: bytes, new: bytes) -> None:
    """The XSD refuses what it does not describe, so the tests above can fail."""
    repo.pipeline({"id": "ok", "command": "echo hi"}, pipeline_id="main")
    _, document = repo.start_json()
    data = junit_xml(run_dir_of(repo, document))
    schema().validate(data.decode())
    assert old in data
    assert not schema().is_valid(data.replace(old, new, 1).decode())


def test_the_timestamp_has_no_zone_and_times_three_decimals(repo: Repo) -> None:
    repo.pipeline({"id": "ok", "command": "true"})
    _, document = repo.start_json()
    data = junit_xml(run_dir_of(repo, document)).decode()
    suite = ET.fromstring(data).find("testsuite")
    assert suite is not None
    stamp = suite.get("timestamp", "")
    assert len(stamp) == 19 and stamp[10] == "T"
    assert not schema().is_valid(data.replace(stamp, stamp + "Z"))
    time_value = suite.get("time", "")
    assert len(time_value.split(".")[1]) == 3
    assert not schema().is_valid(data.replace(f'time="{time_value}"', f'time="{time_value}1"'))


@pytest.mark.slow
def test_report_junit_through_the_cli(repo: Repo) -> None:
    repo.pipeline(
        {"id": "ok", "command": "echo fine"},
        {"id": "bad", "command": "echo broke >&2; exit 3"},
    )
    code, document = repo.start_json()
    assert code == 1
    (repo.root / "reports").mkdir()
    result = repo.cli("report", "@last", "--junit", "reports/junit.xml", "--format", "json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["run_id"], printed["junit"]) == (document["run_id"], "reports/junit.xml")
    data = (repo.root / "reports" / "junit.xml").read_text(encoding="utf-8")
    schema().validate(data)
    suite = ET.fromstring(data).find("testsuite")
    assert suite is not None and counts(suite) == (2, 1, 0, 0)
    assert "broke" in (cases(suite)["bad"].findtext("system-err") or "")
    assert_usage_error(repo.cli("report", "--junit", "j.xml"), "--junit needs a run")
    assert_usage_error(repo.cli("report", "@last", "--junit", "nowhere/j.xml"), "no directory")
    assert not (repo.root / "nowhere").exists()
