"""Parsing checklist items and editing one item's line without touching any other byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from codex_orchestrator.evidence.checklist import (
    checked_with_evidence,
    identity_of,
    mark_items,
    parse,
)

from .helpers import SEED_CHECKLIST, SEED_RUN, TASK

EVIDENCE = ".runs/t/cli/2025-11-01T00-00-00-000Z-aaaaaaaa/manifest.json"


def test_identity_stops_at_em_dash_or_semicolon_and_folds_case_and_space() -> None:
    assert identity_of("Synchronize   Collateral — `tasks/index.json`; Evidence: x") == (
        "synchronize collateral"
    )
    assert identity_of("Run diagnostics (`npx x`); Evidence: `a`") == "run diagnostics (`npx x`)"
    assert identity_of("Plain item") == "plain item"
    assert identity_of("Hyphen - is not a separator") == "hyphen - is not a separator"


def test_parse_items_headings_and_evidence() -> None:
    text = (
        "# Title\n"
        "## Section ##\n"
        "- [ ] First — detail\n"
        "* [X] Second; Evidence: `a/manifest.json`, `b.txt`, `c/manifest.json`\n"
        "  1. [x] Nested numbered\n"
        "- [] not an item\n"
        "-[ ] not an item either\n"
        "```\n"
        "- [ ] inside a fence\n"
        "# not a heading\n"
        "```\n"
        "### Sub\n"
        "+ [ ] Third\n"
    )
    checklist = parse(text.encode())
    assert [(h.line, h.level, h.text) for h in checklist.headings] == [
        (1, 1, "Title"),
        (2, 2, "Section"),
        (12, 3, "Sub"),
    ]
    items = checklist.items
    assert [(i.line, i.checked, i.identity) for i in items] == [
        (3, False, "first"),
        (4, True, "second"),
        (5, True, "nested numbered"),
        (13, False, "third"),
    ]
    assert items[1].evidence == ("a/manifest.json", "c/manifest.json")
    assert items[0].evidence == ()


def test_seed_checklist_items() -> None:
    checklist = parse(SEED_CHECKLIST.encode())
    assert len(checklist.items) == 13
    assert all(item.checked for item in checklist.items)
    cited = f".runs/{TASK}/cli/{SEED_RUN}/manifest.json"
    assert all(item.evidence == (cited,) for item in checklist.items)
    assert checklist.items[0].identity == "synchronize collateral"
    assert checklist.items[0].line == 6


def test_section_ends_at_same_or_higher_level_heading() -> None:
    text = "## A\n- [ ] a1\n### A.1\n- [ ] a2\n## B\n- [ ] b1\n# C\n- [ ] c1\n"
    checklist = parse(text.encode())
    a, _, b, c = checklist.headings
    assert [i.identity for i in checklist.section(a)] == ["a1", "a2"]
    assert [i.identity for i in checklist.section(b)] == ["b1"]
    assert [i.identity for i in checklist.section(c)] == ["c1"]


def test_checked_with_evidence_appends_a_clause() -> None:
    assert (
        checked_with_evidence("- [ ] Do it", 3, EVIDENCE) == f"- [x] Do it; Evidence: `{EVIDENCE}`"
    )
    # trailing whitespace (a markdown line break) stays at the end
    assert checked_with_evidence("- [ ] Do it  ", 3, EVIDENCE) == (
        f"- [x] Do it; Evidence: `{EVIDENCE}`  "
    )


def test_checked_with_evidence_extends_an_existing_clause() -> None:
    line = "- [x] Done; Evidence: `old/manifest.json`, tests `x.ts`."
    assert checked_with_evidence(line, 3, EVIDENCE) == (
        f"- [x] Done; Evidence: `old/manifest.json`, `{EVIDENCE}`, tests `x.ts`."
    )
    assert checked_with_evidence("- [ ] Done; evidence: pending", 3, EVIDENCE) == (
        f"- [x] Done; evidence: `{EVIDENCE}` pending"
    )


def test_evidence_in_the_identity_is_not_the_evidence_clause() -> None:
    assert checked_with_evidence("- [ ] Evidence: gather it", 3, EVIDENCE) == (
        f"- [x] Evidence: gather it; Evidence: `{EVIDENCE}`"
    )


def test_checked_with_evidence_is_idempotent() -> None:
    once = checked_with_evidence("- [ ] Do it", 3, EVIDENCE)
    assert checked_with_evidence(once, 3, EVIDENCE) == once


def test_mark_keeps_crlf_missing_final_newline_and_every_other_byte() -> None:
    data = b"# T\r\n- [ ] One\r\n- [ ] Two \xff\r\n- [ ] Three"
    checklist = parse(data)
    one, _, three = checklist.items
    edited = mark_items(checklist, [one, three], EVIDENCE)
    expected = (
        b"# T\r\n- [x] One; Evidence: `" + EVIDENCE.encode() + b"`\r\n- [ ] Two \xff\r\n"
        b"- [x] Three; Evidence: `" + EVIDENCE.encode() + b"`"
    )
    assert edited == expected
    assert checklist.encode() == data


def test_mark_with_byte_order_mark_on_the_first_line() -> None:
    data = "\ufeff- [ ] First\n".encode()
    checklist = parse(data)
    assert checklist.items[0].identity == "first"
    assert mark_items(checklist, checklist.items, EVIDENCE) == (
        f"\ufeff- [x] First; Evidence: `{EVIDENCE}`\n".encode()
    )


_LINES = st.lists(
    st.binary(max_size=30).map(lambda raw: bytes(b for b in raw if b not in b"\n\r`~")),
    max_size=8,
)


@given(before=_LINES, after=_LINES, ending=st.sampled_from([b"\n", b"\r\n"]), final=st.booleans())
def test_mark_changes_only_the_item_line(
    before: list[bytes], after: list[bytes], ending: bytes, final: bool
) -> None:
    data = ending.join([*before, b"- [ ] Target item", *after]) + (ending if final else b"")
    checklist = parse(data)
    targets = [item for item in checklist.items if item.identity == "target item"]
    edited = mark_items(checklist, targets[-1:], EVIDENCE)
    changed = [
        (old, new)
        for old, new in zip(data.split(b"\n"), edited.split(b"\n"), strict=True)
        if old != new
    ]
    assert len(changed) == 1
    assert changed[0][1].startswith(b"- [x] Target item; Evidence: `")
