"""PII detectors: patterns that find candidates, checksums and format rules that confirm them.

Every detector finds :class:`Finding` spans of one or more *kinds*. Candidates are
confirmed wherever the format has a check: card numbers by Luhn and issuer
prefix, IBANs by their length and ISO 7064 mod-97 check, Spanish DNI/NIE by their
check letter, Canadian SINs by Luhn, US SSNs and UK NINOs by their allocation
rules, IP addresses by :mod:`ipaddress`. A number that fails its check is not PII
of that kind (it is an order number, a date, a version ...).

Names have no format: they come from a pluggable :class:`NameDetector`. The
built-in :class:`GazetteerNameDetector` knows common given names and honorifics;
plug in a stronger one (an NER model) with the same one-method protocol.

:func:`find_pii` runs the detectors on the text *folded* to one spelling (see
:mod:`._normalize`: NFKC, no zero-width or format characters, one kind of space,
dash and apostrophe, JSON escapes decoded) and maps each finding back to the
original characters. Patterns therefore use separator *classes* (any space, a
dash, a dot, a line break) and match letters in either case where a format allows it.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._normalize import fold

__all__ = [
    "Finding",
    "Detector",
    "NameDetector",
    "PatternDetector",
    "GazetteerNameDetector",
    "KINDS",
    "GROUPS",
    "default_detectors",
    "find_pii",
    "luhn_ok",
    "iban_ok",
]

#: Every kind the built-in detectors report, with ``name`` from a name detector.
KINDS = ("email", "phone", "card", "iban", "us_ssn", "uk_nino", "es_dni", "ca_sin", "ipv4", "ipv6", "name")
#: Group names a policy may use for several kinds at once.
GROUPS = {"national_id": ("us_ssn", "uk_nino", "es_dni", "ca_sin"), "ip": ("ipv4", "ipv6")}


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: ``text[start:end]`` is a value of ``kind``."""

    kind: str
    start: int
    end: int
    value: str


@runtime_checkable
class Detector(Protocol):
    """Finds PII of its ``kinds`` in a text."""

    kinds: tuple[str, ...]

    def find(self, text: str) -> list[Finding]: ...


@runtime_checkable
class NameDetector(Protocol):
    """The seam for person names. ``available()`` returns ``None`` when the detector
    can run, else why it cannot (a missing model, say); the privacy gate then fails
    closed instead of sending names it could not look for."""

    kinds: tuple[str, ...]

    def find(self, text: str) -> list[Finding]: ...

    def available(self) -> str | None: ...


# -- checks ---------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by card numbers and Canadian SINs."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27, "GB": 22,
    "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "TR": 26,
}


def iban_ok(iban: str) -> bool:
    """Length for the country (where known, else 15..34) and the mod-97 check."""
    s = re.sub(r"[\s\-.]", "", iban).upper()
    if not s.isascii() or not s.isalnum():
        return False
    want = _IBAN_LENGTHS.get(s[:2])
    if (want and len(s) != want) or not 15 <= len(s) <= 34 or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_ok(digits: str) -> bool:
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
        return False
    two, four = int(digits[:2]), int(digits[:4])
    return (
        digits[0] == "4"                      # Visa
        or 51 <= two <= 55 or 2221 <= four <= 2720  # Mastercard
        or two in (34, 37)                    # Amex
        or digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649  # Discover
        or 3528 <= four <= 3589               # JCB
        or two in (36, 38) or 300 <= int(digits[:3]) <= 305  # Diners
    )


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _dni_ok(value: str) -> bool:
    s = value.replace("-", "").upper()
    body = {"X": "0", "Y": "1", "Z": "2"}.get(s[0], s[0]) + s[1:-1]
    return body.isdigit() and _DNI_LETTERS[int(body) % 23] == s[-1]


def _ssn_ok(value: str) -> bool:
    d = re.sub(r"\D", "", value)
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _sin_ok(value: str) -> bool:
    d = re.sub(r"\D", "", value)
    return d[0] not in "08" and luhn_ok(d)


def _ipv4_ok(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv6_ok(value: str) -> bool:
    if sum(c.isalnum() for c in value) < 3:
        return False
    try:
        ipaddress.IPv6Address(value.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _phone_ok(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if len(set(digits)) < 3:
        return False
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    if re.match(r"00[1-9]\d{0,2}[ .-]", value):  # the international prefix written as 00
        return 10 <= len(digits) <= 17
    if digits.startswith("0"):  # a national number with its trunk prefix (UK, DE, FR, ...)
        return 10 <= len(digits) <= 11
    groups = re.findall(r"\d+", value)
    if len(digits) == 10 and [len(g) for g in groups] in ([3, 3, 4], [10]) and len(groups) == 3:
        return digits[0] in "23456789" and digits[3] in "23456789"  # North American
    return False


# -- pattern detectors ---------------------------------------------------------------


class PatternDetector:
    """A regular expression for candidates plus a check that confirms each one.

    Args:
        kind: the kind reported.
        pattern: candidates; group 1, if present, is the value.
        check: confirms a candidate; ``None`` accepts every match.
        flags: ``re`` flags for ``pattern``.
        split: a pattern of the separators inside a value; a candidate that fails
            its check is then tried part by part (whole groups, longest first), so
            a number run on into the next one ("... 9734\n5 x 524 ml") or after
            another ("invoice 1234 4111 ...") is still found.
    """

    def __init__(self, kind: str, pattern: str, check=None, flags: int = 0, split: str | None = None) -> None:
        self.kinds = (kind,)
        self.kind = kind
        self.pattern = re.compile(pattern, flags)
        self.check = check
        self.split = re.compile(split) if split else None

    def _part(self, value: str) -> tuple[int, int] | None:
        assert self.split is not None and self.check is not None
        seps = list(self.split.finditer(value))
        starts = [0] + [m.end() for m in seps]
        ends = [m.start() for m in seps] + [len(value)]
        parts = sorted(((a, b) for a in starts for b in ends if b > a), key=lambda p: p[0] - p[1])
        return next(((a, b) for a, b in parts if (a, b) != (0, len(value)) and self.check(value[a:b])), None)

    def find(self, text: str) -> list[Finding]:
        out = []
        g = 1 if self.pattern.groups else 0
        pos = 0
        while (m := self.pattern.search(text, pos)) is not None:
            value, pos = m.group(g), m.end()
            if self.check is None or self.check(value):
                out.append(Finding(self.kind, m.start(g), m.end(g), value))
            elif self.split is not None and (part := self._part(value)) is not None:
                a, b = part
                out.append(Finding(self.kind, m.start(g) + a, m.start(g) + b, value[a:b]))
                pos = m.start(g) + b  # what follows the part may start the next value
        return out


class _IbanDetector(PatternDetector):
    """IBANs, written compact or in groups of four; a candidate that swallowed a
    following word is shortened group by group until it passes its check."""

    def __init__(self) -> None:
        super().__init__("iban", r"\b[A-Z]{2}\d{2}(?:[ \t-]?[A-Z0-9]{1,4}){3,8}\b", flags=re.IGNORECASE)

    def find(self, text: str) -> list[Finding]:
        out = []
        for m in self.pattern.finditer(text):
            value = m.group(0)
            while value:
                if iban_ok(value):
                    out.append(Finding("iban", m.start(), m.start() + len(value), value))
                    break
                cut = max(value.rfind(" "), value.rfind("\t"), value.rfind("-"))
                value = value[:cut] if cut > 0 else ""
        return out


_NOT_IN_WORD = r"(?<![\w.@/-])"
_END = r"(?![\w@/-]|\.\d)"
#: Between the digit groups of a number: a space or tab, a dash, a dot, or a line
#: break, at most two of them ("4111  1111", "4111.\n1111"); in folded text.
_GAP = r"[ \t\r\n.-]{0,2}"
#: Between the parts of an id or a phone number: one space, tab, dash or dot.
_SEP = r"[ \t.-]"


def default_detectors() -> list[Detector]:
    """The built-in pattern detectors, in priority order (an earlier detector wins an
    overlapping span)."""
    return [
        # Internationalised addresses too: letters of any script in the local part
        # and the domain (and a TLD of letters, or punycode).
        PatternDetector("email", r"(?<![\w.+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)\b"),
        _IbanDetector(),
        PatternDetector("card", _NOT_IN_WORD + rf"(\d(?:{_GAP}\d){{12,18}})" + _END,
                        lambda v: _card_ok(re.sub(r"\D", "", v)), split=r"[ \t\r\n.-]+"),
        PatternDetector("us_ssn", _NOT_IN_WORD + rf"(\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{4}})" + _END, _ssn_ok),
        PatternDetector("uk_nino", r"\b((?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])\b",
                        flags=re.IGNORECASE),
        PatternDetector("es_dni", r"\b(\d{8}[ -]?[A-Z]|[XYZ]\d{7}[ -]?[A-Z])\b",
                        lambda v: _dni_ok(v.replace(" ", "")), flags=re.IGNORECASE),
        PatternDetector("ca_sin", _NOT_IN_WORD + rf"(\d{{3}}{_SEP}\d{{3}}{_SEP}\d{{3}})" + _END, _sin_ok),
        PatternDetector("ipv4", r"(?<![\w.])((?:\d{1,3}\.){3}\d{1,3})(?![\w]|\.\d)", _ipv4_ok),
        PatternDetector("ipv6", r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%\w+)?)(?![\w:])", _ipv6_ok),
        PatternDetector("phone", rf"(?<![\w+])((?:\+\d{{1,3}}{_SEP}?)?(?:\(\d{{1,4}}\){_SEP}?)?\d{{1,8}}(?:{_SEP}\d{{1,8}}){{0,5}})(?![\w])",
                        _phone_ok),
    ]


# -- names ------------------------------------------------------------------------------

_GIVEN = frozenset("""
Aaliyah Adam Ahmed Aisha Alan Alejandro Alex Alice Amanda Amir Amy Ana Andrea Andrew Angela Anna Anne Anthony
Antonio Arjun Barbara Ben Benjamin Beth Brian Carlos Carmen Carol Catherine Charles Chen Chloe Chris Christine
Claire Daniel David Deborah Diana Diego Dmitri Elena Elizabeth Emily Emma Eric Fatima Fernando Francesca
Gabriel George Giulia Grace Hannah Hans Harry Helen Henry Hiroshi Ian Isabel Ivan Jack Jacob James Jane Jason
Javier Jennifer Jessica Joao John Jonathan Jose Joseph Juan Julia Karen Karim Katarzyna Kenji Kevin Laura Leila
Linda Lisa Lucas Lucia Luis Maria Mario Marta Mary Matthew Mei Michael Michelle Miguel Mohammed Nadia Natalia
Nicole Noah Olga Olivia Omar Oscar Patricia Paul Pedro Peter Priya Rachel Rahul Raj Rebecca Richard Robert
Rosa Ryan Sakura Samuel Sandra Sara Sarah Sean Sergei Sofia Sophie Stefan Stephen Susan Thomas Tom Wei William
Yuki Zara Zoe Søren Björn Sinéad Renée Zoë Seán Chloé Jürgen Ángel Inés
""".split())
_TITLES = frozenset("mr mrs ms miss mx dr prof sir madam herr frau sr sra mme mlle".split())
#: A word: letters of any script, with inner apostrophes or hyphens (O'Brien, Van-Dijk).
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def _plain(word: str) -> str:
    """``word`` without accents, case-folded: José, JOSE and jose are one name."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c)).casefold()


def _capitalised(word: str, caps: bool) -> bool:
    """A name-like word: starts with a capital (McDonald, O'Brien, Ávila); in an
    all-capitals name (``caps``), all capitals."""
    return word[0].isupper() and (word.isupper() == caps or len(word) == 1 or (not caps and word[1:2] == "'"))


class GazetteerNameDetector:
    """Person names by a list of common given names and by honorifics.

    Finds "Given Surname" (a known given name followed by one or two capitalised
    words) and "Dr. Surname" / "Mrs Given Surname" after an honorific. Given names
    match without regard to accents or case (José = Jose, MARIA = Maria); surnames
    may carry diacritics, apostrophes and inner capitals (Núñez, O'Brien,
    McDonald); a name in capitals (JOHN SMITH) is found as a whole. A bare given
    name is not reported (too many are also words: Mark, Grace, Will).

    Args:
        given_names: replaces the built-in list of about 150 given names.
    """

    kinds = ("name",)

    def __init__(self, given_names: Iterable[str] | None = None) -> None:
        self.given = frozenset(_plain(n) for n in (given_names if given_names is not None else _GIVEN))

    def available(self) -> str | None:
        return None

    def find(self, text: str) -> list[Finding]:
        words = [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(text)]
        out: list[Finding] = []
        i = 0
        while i < len(words):
            start, end, word = words[i]
            caps = word.isupper() and len(word) > 1
            titled = _plain(word) in _TITLES and _capitalised(word, caps)
            if not titled and not (_plain(word) in self.given and _capitalised(word, caps)):
                i += 1
                continue
            # The following name-like words, each after one space (". " after a title).
            j, last = i + 1, end
            while j < len(words) and j - i <= (1 if caps else 2):
                gap = text[last:words[j][0]]
                if gap not in (" ", ". ") or (gap == ". " and not (titled and j == i + 1)):
                    break
                if not _capitalised(words[j][2], caps) or _plain(words[j][2]) in _TITLES:
                    break
                last = words[j][1]
                j += 1
            if j > i + 1:
                first = words[i + 1][0] if titled else start
                out.append(Finding("name", first, last, text[first:last]))
            i = j if j > i + 1 else i + 1
        return out


def find_pii(text: str, detectors: Sequence[Detector]) -> list[Finding]:
    """All findings of ``detectors`` in ``text``, without overlaps, in text order.

    Where spans overlap, the finding of the earlier detector wins, then the longer one.
    The detectors see ``text`` folded (:func:`~slmgraph.privacy._normalize.fold`);
    each finding's span and value are those of the original text.
    """
    folded = fold(text)
    ranked = []
    for rank, det in enumerate(detectors):
        for f in det.find(folded.text):
            start, end = folded.span(f.start, f.end)
            ranked.append((rank, -(end - start), Finding(f.kind, start, end, text[start:end])))
    ranked.sort(key=lambda t: (t[0], t[1], t[2].start))
    taken: list[Finding] = []
    for _, _, f in ranked:
        if all(f.end <= t.start or f.start >= t.end for t in taken):
            taken.append(f)
    return sorted(taken, key=lambda f: f.start)
