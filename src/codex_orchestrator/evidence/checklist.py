"""Markdown task-list checklists: parse headings and items; edit one item, keep every other byte.

An item is a task-list line (``- [ ] text`` or ``- [x] text``; any bullet or ``1.`` marker).
Its identity is its text up to the first `` — `` or ``;``, whitespace collapsed and case
folded; its evidence is every backticked path ending in ``manifest.json`` on the line. Lines in
fenced code blocks are neither headings nor items. Files are decoded as UTF-8 with
``surrogateescape``, so even invalid bytes survive an edit unchanged.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

_ITEM = re.compile(r"\s*(?:[-*+]|\d{1,9}[.)])\s+\[(?P<box>[ xX])\]\s+(?P<text>\S.*)")
_HEADING_MARKS = re.compile(r" {0,3}(#{1,6})(?=\s|$)")
_FENCE = re.compile(r" {0,3}(?P<fence>`{3,}|~{3,})")
_BACKTICKED = re.compile(r"`([^`]*)`")
_IDENTITY_END = re.compile(r" — |;")
_EVIDENCE_CLAUSE = re.compile(r"\bEvidence\s*:", re.IGNORECASE)
_ENCODING = ("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Heading:
    """A markdown ATX heading: 1-based line number, level (1-6) and text."""

    line: int
    level: int
    text: str


@dataclass(frozen=True)
class Item:
    """One checklist item and where its checkbox character sits in its line."""

    line: int
    checked: bool
    text: str
    identity: str
    evidence: tuple[str, ...]
    box: int


@dataclass(frozen=True)
class Checklist:
    """A parsed markdown file: its lines (with their endings), headings and items."""

    lines: tuple[str, ...]
    headings: tuple[Heading, ...]
    items: tuple[Item, ...]

    def section(self, heading: Heading) -> tuple[Item, ...]:
        """The items under ``heading``, up to the next heading of the same or a higher level."""
        after = bisect_right(self.headings, heading.line, key=_line)
        end = next(
            (h.line for h in self.headings[after:] if h.level <= heading.level),
            len(self.lines) + 1,
        )
        first = bisect_right(self.items, heading.line, key=_line)
        return self.items[first : bisect_left(self.items, end, key=_line)]

    def encode(self) -> bytes:
        """The file's bytes, exactly as read."""
        return "".join(self.lines).encode(*_ENCODING)


def fold(text: str) -> str:
    """Collapse whitespace and fold case, the way item identities are compared."""
    return " ".join(text.split()).casefold()


def identity_of(text: str) -> str:
    """The identity of an item's text: up to the first `` — `` or ``;``, folded."""
    return fold(_IDENTITY_END.split(text, maxsplit=1)[0])


def evidence_of(text: str) -> tuple[str, ...]:
    """Every backticked path ending in ``manifest.json`` in ``text``."""
    spans = (match.group(1).strip() for match in _BACKTICKED.finditer(text))
    return tuple(span for span in spans if span.endswith("manifest.json"))


def parse(data: bytes) -> Checklist:
    """Parse a markdown file's bytes."""
    lines = _split_lines(data.decode(*_ENCODING))
    headings: list[Heading] = []
    items: list[Item] = []
    fence: str | None = None
    for number, line in enumerate(lines, start=1):
        content = _content(line).lstrip("\ufeff") if number == 1 else _content(line)
        opening = _FENCE.match(content)
        if fence is not None:
            if opening and opening["fence"][0] == fence[0] and len(opening["fence"]) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening["fence"]
        elif heading := _heading(number, content):
            headings.append(heading)
        elif item := _ITEM.fullmatch(content):
            items.append(_item(number, item, offset=len(_content(line)) - len(content)))
    return Checklist(tuple(lines), tuple(headings), tuple(items))


def _heading(number: int, content: str) -> Heading | None:
    """An ATX heading line: 1-6 ``#``, then the text, less an optional closing run of ``#``.

    Plain string work after one anchored match, so a huge line costs linear time (a single
    regex with a lazy text group and optional closing run backtracks quadratically).
    """
    marks = _HEADING_MARKS.match(content)
    if marks is None:
        return None
    text = content[marks.end() :].strip()
    unclosed = text.rstrip("#")
    if unclosed != text and (not unclosed or unclosed[-1].isspace()):
        text = unclosed.rstrip()
    return Heading(number, len(marks.group(1)), text)


def mark_items(checklist: Checklist, items: Iterable[Item], evidence: str) -> bytes:
    """The file with ``items`` checked and citing ``evidence``; every other byte unchanged."""
    lines = list(checklist.lines)
    for item in items:
        line = lines[item.line - 1]
        content = _content(line)
        lines[item.line - 1] = (
            checked_with_evidence(content, item.box, evidence) + line[len(content) :]
        )
    return "".join(lines).encode(*_ENCODING)


def checked_with_evidence(content: str, box: int, evidence: str) -> str:
    """An item line checked, citing ``evidence``: added to the Evidence clause after the
    item's identity, else appended as ``; Evidence: `<path>```."""
    content = content[:box] + ("x" if content[box] == " " else content[box]) + content[box + 1 :]
    if evidence in evidence_of(content):
        return content
    end = len(content.rstrip())
    body, trailing = content[:end], content[end:]
    separator = _IDENTITY_END.search(body, box + 1)
    clause = _EVIDENCE_CLAUSE.search(body, separator.start()) if separator else None
    if clause is None:
        return f"{body}; Evidence: `{evidence}`{trailing}"
    cited = [
        m
        for m in _BACKTICKED.finditer(body, clause.end())
        if m.group(1).strip().endswith("manifest.json")
    ]
    if cited:
        at = cited[-1].end()
        return f"{body[:at]}, `{evidence}`{body[at:]}{trailing}"
    at = clause.end()
    return f"{body[:at]} `{evidence}`{body[at:]}{trailing}"


def _item(number: int, match: re.Match[str], offset: int) -> Item:
    text = match["text"].rstrip()
    return Item(
        line=number,
        checked=match["box"] != " ",
        text=text,
        identity=identity_of(text),
        evidence=evidence_of(text),
        box=offset + match.start("box"),
    )


def _line(entry: Heading | Item) -> int:
    return entry.line


def _split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping each line's ending (``\\n`` or ``\\r\\n``, or none at EOF)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _content(line: str) -> str:
    """A line without its ending."""
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line
