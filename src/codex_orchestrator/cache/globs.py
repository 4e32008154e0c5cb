"""Globs of the stage cache: checked when the config is read, matched against relative paths.

A glob is relative to the repository root and uses ``/`` between directories. ``*`` matches
any run of characters within one name (dot-files included), ``?`` one character, ``[...]``
one character of a set (``[!...]`` or ``[^...]``: not in it), and a ``**`` segment any number
of directories. A glob never matches outside the root: an absolute glob, or one with a
``..`` segment, is refused. A glob that names a directory takes every file below it, so that
``"src"`` means what a reader expects (more inputs can only make a miss, never a wrong hit).
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

_WILDCARDS = frozenset("*?[")


class GlobError(ValueError):
    """A glob that cannot be used; ``problem`` and ``fix`` complete a config error line."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


class Glob(NamedTuple):
    """A checked glob, ready to match relative POSIX paths."""

    text: str
    #: The leading directories without wildcards: nothing outside it can match ("" = root).
    base: str
    regex: re.Pattern[str]
    #: The number of names a match has at most (None with a ``**`` segment).
    max_depth: int | None

    def matches(self, relative: str) -> bool:
        """Whether ``relative`` (a file or directory) is named by this glob."""
        return self.regex.fullmatch(relative) is not None

    def may_match_below(self, directory: str) -> bool:
        """Whether a path inside ``directory`` (relative, "" = root) could match."""
        base = self.base
        related = (
            not directory
            or not base
            or directory == base
            or directory.startswith(base + "/")
            or base.startswith(directory + "/")
        )
        depth = directory.count("/") + 1 if directory else 0
        return related and (self.max_depth is None or depth < self.max_depth)


def normalise_glob(text: str) -> str:
    """``text`` without ``.`` and empty segments; raises `GlobError` when it leaves the root.

    The root itself (``"."``) becomes ``**``: every file.
    """
    if text.startswith("/"):
        raise GlobError(
            f"absolute path {text!r} is outside the repository root",
            "write globs relative to the root, e.g. 'src/**/*.py'",
        )
    segments = [segment for segment in text.split("/") if segment not in ("", ".")]
    if ".." in segments:
        lexical = posixpath.normpath(text)
        if lexical == ".." or lexical.startswith("../"):
            raise GlobError(
                f"{text!r} leads outside the repository root",
                "a cache only sees files inside the root; list paths below it",
            )
        raise GlobError(
            f"'..' is not allowed in a glob ({text!r})", f"write it without '..': {lexical!r}"
        )
    return "/".join(segments) or "**"


def compile_glob(text: str) -> Glob:
    """Check and compile ``text``; raises `GlobError`."""
    normal = normalise_glob(text)
    segments = normal.split("/")
    pieces = [None if segment == "**" else _segment_regex(segment) for segment in segments]
    regex = ""
    need_separator = False
    for index, piece in enumerate(pieces):
        if piece is None:
            if index == len(pieces) - 1:
                regex += "(?:/.*)?" if need_separator else ".*"
            else:
                regex += ("/" if need_separator else "") + "(?:[^/]+/)*"
            need_separator = False
        else:
            regex += ("/" if need_separator else "") + piece
            need_separator = True
    try:
        compiled = re.compile(regex, re.DOTALL)
    except re.error as error:
        raise GlobError(
            f"invalid glob {text!r} ({error})", "check its [...] sets, e.g. '[a-z]'"
        ) from None
    literal: list[str] = []
    for segment in segments[:-1]:
        if _WILDCARDS.intersection(segment):
            break
        literal.append(segment)
    depth = None if "**" in segments else len(segments)
    return Glob(normal, "/".join(literal), compiled, depth)


def _segment_regex(segment: str) -> str:
    """The regex of one name of a glob (no ``/`` in it)."""
    out: list[str] = []
    index, size = 0, len(segment)
    while index < size:
        char = segment[index]
        if char == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _set_end(segment, index)) > 0:
            out.append(_set_regex(segment[index + 1 : end]))
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _set_end(segment: str, start: int) -> int:
    """The index of the ``]`` closing the set opened at ``start``, or -1 (then ``[`` is literal)."""
    index = start + 1
    if index < len(segment) and segment[index] in "!^":
        index += 1
    if index < len(segment) and segment[index] == "]":
        index += 1
    return segment.find("]", index)


def _set_regex(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    # Escape what a regex set treats specially, keeping '-' for ranges; '/' never matches.
    escaped = "".join("\\" + char if char in "\\[]^&~|" else char for char in body)
    return f"[^/{escaped}]" if negate else f"(?!/)[{escaped}]"
