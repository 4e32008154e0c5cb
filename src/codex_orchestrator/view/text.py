"""Making untrusted stage output safe to show on a terminal.

A stage's output may hold escape sequences (clear the screen, move the cursor, retitle the
window, hyperlinks), bare control characters (bell, backspace, carriage return) and Unicode
direction overrides that reorder what a reader sees. Everything shown to a person goes through
`neutralise`, which drops escape sequences whole and turns every other control character into a
visible symbol, so the terminal never acts on it.
"""

from __future__ import annotations

import codecs
import re

# Escape sequences, dropped whole: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (ended by
# BEL or ST, or running to the end of the text when unterminated), two-byte ESC sequences, and
# their 8-bit C1 forms.
_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# Whatever control remains (C0 but tab and newline, DEL, C1) and the Unicode format characters
# that reorder or hide text (bidi embeddings/overrides/isolates, line/paragraph separators).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
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
    text = _SEQUENCE.sub("", text).replace("\t", "    ")
    if not keep_newlines:
        text = text.replace("\n", "\u240a")
    return _CONTROL.sub(_visible, text)


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
    """Neutralises a byte stream chunk by chunk (UTF-8 characters may straddle chunks)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> bytes:
        """The safe form of the next ``chunk``; carriage returns become newlines."""
        text = self._decoder.decode(chunk).replace("\r\n", "\n").replace("\r", "\n")
        return neutralise(text).encode("utf-8")
