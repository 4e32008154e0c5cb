"""A model of how the GitHub Actions runner reads a step's output (actions/runner:
ActionCommandManager, ActionCommand), the documented workflow-command syntax, and the lines a
hostile stage prints to take over a workflow."""

from __future__ import annotations

import re
from typing import NamedTuple

#: The documented syntax of a workflow command line, with escaped values (no raw CR/LF, no
#: raw ':' or ',' in a property value).
COMMAND_LINE = re.compile(
    r"::(?P<name>[a-z][a-z-]*|[0-9a-f]{32})"
    r"(?: (?P<props>[a-z]+=[^,:\r\n]*(?:,[a-z]+=[^,:\r\n]*)*))?"
    r"::(?P<data>[^\r\n]*)"
)
#: Everything a hostile stage might print to take over the workflow.
INJECTIONS = [
    "::error::pwned",
    "::error file=x,line=1::pwned",
    "::set-output name=token::pwned",
    "::add-mask::pwned",
    "::stop-commands::x",
    "::x::",
    "  ::warning::indented",
    "##[error]legacy form anywhere",
    "text before ##[set-output name=a;]pwned",
    "progress 50%\r::error::after a carriage return",
    "::endgroup::",
    "::group::fake",
    "\x1b[2K::error::after an escape sequence",
]


class Command(NamedTuple):
    name: str
    properties: dict[str, str]
    data: str


KNOWN = {"error", "warning", "notice", "group", "endgroup", "set-output", "add-mask", "debug"}


def _unescape(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for escaped, raw in pairs:
        text = text.replace(escaped, raw)
    return text


DATA_PAIRS = (("%0D", "\r"), ("%0A", "\n"), ("%25", "%"))
PROPERTY_PAIRS = (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%"))


def _parse(line: str, registered: set[str]) -> Command | None:
    """One output line as the runner parses it: ``::`` form at the start (after leading
    whitespace), else the legacy ``##[name props]data`` form anywhere in the line."""
    message = line.lstrip()
    if message.startswith("::"):
        end = message.find("::", 2)
        if end >= 0:
            info = message[2:end]
            name, _, props = info.partition(" ")
            if name in registered:
                properties = {}
                for pair in filter(None, props.strip().split(",")):
                    key, sep, value = pair.partition("=")
                    if sep and key and value:
                        properties[key] = _unescape(value, PROPERTY_PAIRS)
                return Command(name, properties, _unescape(message[end + 2 :], DATA_PAIRS))
    start = line.find("##[")
    if start >= 0:
        end = line.find("]", start)
        if end >= 0:
            name = line[start + 3 : end].partition(" ")[0]
            if name in registered:
                return Command(name, {}, line[end + 1 :])
    return None


def runner_commands(output: str) -> list[Command]:
    """The commands the runner acts on in ``output``: lines split at CR, LF or CRLF; while
    ``stop-commands`` is in force, nothing but its token."""
    registered = KNOWN | {"stop-commands"}
    acted: list[Command] = []
    token: str | None = None
    for line in re.split(r"\r\n|\r|\n", output):
        command = _parse(line, registered | ({token} if token else set()))
        if command is None:
            continue
        if token is not None:
            if command.name == token:
                acted.append(command)
                token = None
            continue
        if command.name == "stop-commands":
            token = command.data
        acted.append(command)
    return acted
