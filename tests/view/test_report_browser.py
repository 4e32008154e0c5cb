"""The report as a person sees it: opened in real headless Chromium (Debian's package).

Chromium comes from the system package manager (``.ci/run`` installs it when missing); the
`playwright` package drives it through ``executable_path`` and downloads no browser. The tests
skip, with the reason, only when either is not there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from helpers.report import HOSTILE, failed_then_resumed_run, report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module, closed at its end."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e . --group dev")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """A page opened on a file, with every console error, page error and dialog recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.page.goto(path.as_uri(), wait_until="load")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def _attempts(manifest: dict[str, Any]) -> int:
    return sum(int(entry.get("attempts") or 0) for entry in manifest["commands"])


def test_report_loads_cleanly_shows_hostile_text_and_one_bar_per_attempt(
    repo: Repo, browser: Any, tmp_path: Path
) -> None:
    run_id, run_dir = failed_then_resumed_run(repo)
    assert report(repo, run_id)[0] == 0
    visit = Visit(browser, run_dir / "report.html")
    page = visit.page
    try:
        page.wait_for_timeout(300)  # let anything that could run, run
        assert visit.errors == []
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert _attempts(manifest) == 4
        assert page.locator("svg.timeline rect.bar").count() == 4
        assert (
            page.locator("pre", has_text=HOSTILE).count() >= 2
        )  # stdout of build, stderr of flaky
        assert page.get_by_text("tester" + HOSTILE).count() == 1  # the resume event's actor
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert visit.dialogs == []
        for box in (bar.bounding_box() for bar in page.locator("rect.bar").all()):
            assert box is not None and box["width"] >= 2 and box["height"] > 5
        for href in page.eval_on_selector_all(
            "a[href^='commands/']", "a => a.map(x => x.getAttribute('href'))"
        ):
            assert (run_dir / href).is_file(), href
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        page.close()


def test_attempt_history_and_parallel_stages_overlap_on_the_timeline(
    repo: Repo, browser: Any
) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    run_dir = repo.root / ".runs/default/cli" / run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["commands"][0]
    manifest["started_at"] = "2026-01-01T00:00:00.000Z"
    manifest["completed_at"] = "2026-01-01T00:00:10.000Z"
    entry.update(started_at="2026-01-01T00:00:00.000Z", completed_at="2026-01-01T00:00:08.000Z")
    parallel = dict(
        entry,
        index=2,
        id="b",
        attempts=3,
        status="succeeded",
        attempt_history=[
            {
                "attempt": 1,
                "exit_code": 1,
                "started_at": "2026-01-01T00:00:01.000Z",
                "duration_seconds": 1.0,
            },
            {
                "attempt": 2,
                "exit_code": 1,
                "started_at": "2026-01-01T00:00:03.000Z",
                "completed_at": "2026-01-01T00:00:04.000Z",
            },
            {
                "attempt": 3,
                "exit_code": 0,
                "started_at": "2026-01-01T00:00:06.000Z",
                "duration_seconds": 2.0,
            },
        ],
    )
    manifest["commands"].append(parallel)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert report(repo, run_id)[0] == 0
    visit = Visit(browser, run_dir / "report.html")
    try:
        assert visit.errors == []
        bars = visit.page.locator("rect.bar")
        assert bars.count() == 4
        boxes = [bar.bounding_box() for bar in bars.all()]
        a_box = boxes[0]
        assert all(a_box["x"] < b["x"] < a_box["x"] + a_box["width"] for b in boxes[1:])
        statuses = visit.page.eval_on_selector_all("g.attempt", "g => g.map(x => x.dataset.status)")
        assert statuses == ["succeeded", "failed", "failed", "succeeded"]
    finally:
        visit.page.close()


def test_task_page_links_to_run_reports(repo: Repo, browser: Any) -> None:
    repo.pipeline({"id": "a", "command": "echo hi"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    assert report(repo, run_id)[0] == 0
    assert report(repo, "--task", "default")[0] == 0
    visit = Visit(browser, repo.root / ".runs/default/report.html")
    try:
        assert visit.errors == []
        visit.page.get_by_role("link", name=run_id).click()
        visit.page.wait_for_load_state("load")
        assert visit.page.url.endswith(f"{run_id}/report.html")
        assert visit.page.title() == f"Run {run_id}"
        assert visit.errors == []
    finally:
        visit.page.close()


def test_a_long_log_box_opens_at_its_end_where_the_failure_is(repo: Repo, browser: Any) -> None:
    repo.pipeline({"id": "unit", "command": "seq 1 150; echo 'FAILED here'; exit 1"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    assert report(repo, run_id)[0] == 0
    visit = Visit(browser, repo.root / ".runs/default/cli" / run_id / "report.html")
    page = visit.page
    try:
        seen = page.evaluate(
            """() => {
                const box = [...document.querySelectorAll('div.tail')]
                    .find(b => b.textContent.includes('FAILED here'));
                const pre = box.querySelector('pre');
                const range = document.createRange();
                range.selectNodeContents(pre);
                const lines = range.getClientRects();
                const frame = box.getBoundingClientRect();
                const last = lines[lines.length - 1], first = lines[0];
                return {overflows: box.scrollHeight > box.clientHeight + 50,
                        lastShown: last.bottom <= frame.bottom + 1 && last.top >= frame.top - 1,
                        firstHidden: first.top < frame.top};
            }"""
        )
        # the box is shorter than the log, and shows its end (the failure), not its top
        assert seen == {"overflows": True, "lastShown": True, "firstHidden": True}
        assert visit.errors == []
    finally:
        page.close()
