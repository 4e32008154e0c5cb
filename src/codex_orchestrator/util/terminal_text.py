"""Making untrusted text safe to show on a terminal: the one neutraliser.

A stage's output (and anything derived from it: summaries, stage ids of a tampered manifest,
history entries) may hold escape sequences (clear the screen, move the cursor, retitle the
window, set the clipboard, hyperlinks), bare control characters (bell, backspace, carriage
return), 8-bit C1 controls and invisible Unicode format characters that reorder or hide what a
reader sees (bidi overrides and isolates, zero-width marks). Every text bound for a terminal
goes through `neutralise`: the live view, the echo of stage output, and every line the commands
print (`console.Reporter` and `console.note` apply it), which drops escape sequences whole and
turns every other control character into a visible symbol, so the terminal never acts on it.
JSON output keeps the characters but writes them as ``\\uXXXX`` escapes
(`escape_json_controls`), which parse back to the same text. Only ``logs`` prints stored bytes
as they are, by design. See docs/resilience.md.
"""

from __future__ import annotations

import codecs
import functools
import re

# Escape sequences, dropped whole: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (ended by
# BEL or ST, or running to the end of the text when unterminated), two-byte ESC sequences, and
# their 8-bit C1 forms.
_SEQUENCE = (
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
#: An escape sequence that the text ends inside of (its final byte or terminator still to come),
#: or a carriage return whose line feed may follow.
_OPEN_SEQUENCE = (
    r"(?:\x1b(?:\[[0-?]*[ -/]*|[\]PX^_][^\x07\x1b\x9c]*|[ -/]*)?"
    r"|\x9b[0-?]*[ -/]*"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*"
    r"|\r)\Z"
)
#: The Unicode format characters that reorder or hide text: the Arabic letter mark, zero-width
#: spaces/joiners and direction marks, line/paragraph separators, bidi embeddings, overrides and
#: isolates, invisible operators and deprecated format controls, the byte-order mark, and the
#: interlinear annotation controls.
_INVISIBLE = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
#: Whatever control remains (C0 but tab and newline, DEL, C1) and the invisible format characters.
_CONTROLS = f"\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}"
_CONTROL = f"[{_CONTROLS}]"
#: Anything `neutralise` would change.
_UNSAFE = f"[\t{_CONTROLS}]"
#: What JSON output escapes beyond the C0 controls the encoder always escapes.
_JSON_UNSAFE = f"[\x7f-\x9f{_INVISIBLE}]"


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # Compiled on first use, not at import: the five patterns take ~2.5 ms to compile, which
    # every command would pay at start-up while most text takes the fast paths below.
    return re.compile(pattern)


def _plain(text: str) -> bool:
    """True when ``text`` holds nothing `neutralise` would change but newlines: every character
    of the unsafe set (controls, C1, the format characters of `_INVISIBLE`) is one that
    `str.isprintable` rejects, so a printable line needs no regular expression."""
    return all(line.isprintable() for line in text.split("\n"))


REPLACEMENT = "\ufffd"


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control picture" of the character, e.g. ␇
    if code == 0x7F:
        return "\u2421"
    return REPLACEMENT


def neutralise(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with escape sequences removed and other control characters made visible.

    Tabs become spaces; newlines are kept unless ``keep_newlines`` is false (then shown as ␊).
    """
    if _plain(text) or _compiled(_UNSAFE).search(text) is None:
        return text if keep_newlines else text.replace("\n", "\u240a")
    text = _compiled(_SEQUENCE).sub("", text).replace("\t", "    ")
    if not keep_newlines:
        text = text.replace("\n", "\u240a")
    return _compiled(_CONTROL).sub(_visible, text)


def prefixed_line(stage_id: str, text: str) -> str:
    """One line of a stage's output as printed without a live view: ``[<stage>] <text>``,
    control characters (newlines and carriage returns included) made visible."""
    return f"[{neutralise(stage_id, keep_newlines=False)}] {neutralise(text, keep_newlines=False)}"


def escape_json_controls(encoded: str) -> str:
    """JSON text with C1 controls, DEL and invisible format characters written as ``\\uXXXX``.

    They can only occur inside JSON strings, so the escaped text parses to the same document;
    a terminal showing it sees plain ASCII instead of the characters.
    """
    if encoded.isascii() and "\x7f" not in encoded:  # ensure_ascii output: nothing to escape
        return encoded
    return _compiled(_JSON_UNSAFE).sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)


def last_line(data: bytes) -> str:
    """The last non-blank line of raw output as a terminal would end up showing it, made safe.

    A carriage return rewinds the line (progress bars), so only the text after the last one that
    is followed by something counts.
    """
    text = data.decode("utf-8", errors="replace")
    for line in reversed(text.split("\n")):
        for segment in reversed(line.split("\r")):
            shown = neutralise(segment, keep_newlines=False).strip()
            if shown:
                return shown
    return ""


class StreamNeutraliser:
    """Neutralises a byte stream chunk by chunk: UTF-8 characters and escape sequences may
    straddle chunks.

    An escape sequence still open at the end of a chunk is held back (up to `HELD_LIMIT`
    characters) and neutralised with what follows, so that its rest is dropped with it instead
    of being shown as text; if the stream ends there, it was to be dropped anyway. A final
    carriage return waits for a line feed the same way.
    """

    HELD_LIMIT = 4096

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def feed(self, chunk: bytes) -> bytes:
        """The safe form of the next ``chunk``; carriage returns become newlines."""
        text = self._held + self._decoder.decode(chunk)
        opened = _compiled(_OPEN_SEQUENCE).search(text, max(0, len(text) - self.HELD_LIMIT))
        self._held = text[opened.start() :] if opened else ""
        text = text[: opened.start()] if opened else text
        return neutralise(text.replace("\r\n", "\n").replace("\r", "\n")).encode("utf-8")
