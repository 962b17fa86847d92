"""Text as the detectors see it: one spelling for the many ways a value can be written.

PII hides behind Unicode as easily as behind formatting: fullwidth digits
(``４１１１``), no-break and thin spaces, zero-width characters inside a number,
typographic dashes and apostrophes, decomposed accents, and JSON escapes (a
request or tool result embedded in a JSON brief writes a line break as ``\\n``).
:func:`fold` rewrites a text into a canonical form:

- JSON escapes (``\\n``, ``\\t``, ``\\r``, ``\\/``, ``\\uXXXX``) become the characters they stand for;
- NFKC, per base character with its combining marks (``e`` + U+0301 -> ``é``, ``１`` -> ``1``);
- format and control characters (zero-width space/joiners, word joiner, BOM, soft
  hyphen, bidi marks; controls other than tab and line breaks) are dropped;
- every space separator becomes ``" "``, every line or paragraph separator ``"\\n"``,
  every dash (and the minus sign) ``"-"``, every apostrophe-like mark ``"'"``;

and keeps, for each character of the result, the span of the original it came
from, so a finding in the folded text maps back to the exact original characters
and redaction replaces them there.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "Folded"]

_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([ntr/]))")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "/": "/"}
_APOSTROPHES = frozenset("\u2019\u2018\u02bc\u02b9\u0060\u00b4\u2032\uff07")
_MINUS = frozenset("\u2212\u2043\ufe63\uff0d")


class Folded:
    """A folded text with the map back to its original.

    Attributes:
        text: the folded text.
    """

    __slots__ = ("text", "_starts", "_ends")

    def __init__(self, text: str, starts: list[int] | None, ends: list[int] | None) -> None:
        self.text = text
        self._starts = starts
        self._ends = ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the folded characters ``text[start:end]`` (``end > start``)."""
        if self._starts is None or self._ends is None:
            return start, end
        return self._starts[start], self._ends[end - 1]


def _canon(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat == "Zs":
        return " "
    if cat in ("Zl", "Zp"):
        return "\n"
    if cat == "Pd" or ch in _MINUS:
        return "-"
    if ch in _APOSTROPHES:
        return "'"
    if cat == "Cf" or (cat == "Cc" and ch not in "\t\n\r"):
        return ""
    return ch


def fold(text: str) -> Folded:
    """``text`` in the canonical form described in the module docstring."""
    if text.isascii() and "\\" not in text:
        if not any(ord(c) < 32 and c not in "\t\n\r" or c == "\x7f" for c in text):
            return Folded(text, None, None)  # nothing to change: the common case costs one scan
    # 1. JSON escapes -> characters, each remembering its original span.
    units: list[tuple[str, int, int]] = []
    pos = 0
    for m in _ESCAPE.finditer(text):
        units += [(c, i, i + 1) for i, c in enumerate(text[pos:m.start()], pos)]
        ch = chr(int(m.group(1), 16)) if m.group(1) else _SIMPLE[m.group(2)]
        units.append((ch, m.start(), m.end()))
        pos = m.end()
    units += [(c, i, i + 1) for i, c in enumerate(text[pos:], pos)]
    # 2. A base character with its combining marks is one cluster; NFKC per cluster.
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    while i < len(units):
        j = i + 1
        while j < len(units) and unicodedata.combining(units[j][0]):
            j += 1
        cluster = "".join(u[0] for u in units[i:j])
        start, end = units[i][1], units[j - 1][2]
        for ch in unicodedata.normalize("NFKC", cluster):
            for c in _canon(ch):
                out.append(c)
                starts.append(start)
                ends.append(end)
        i = j
    return Folded("".join(out), starts, ends)
