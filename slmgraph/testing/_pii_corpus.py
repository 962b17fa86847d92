"""A labelled synthetic corpus for measuring PII detectors (recall and precision).

Each text mixes valid PII values (with correct checksums) with hard negatives that
look like PII but are not: order numbers, dates, times, versions, prices, card
numbers that fail Luhn, IBANs that fail mod-97, SSNs in never-issued ranges,
capitalised words that are not names. Values are random, so the corpus holds no
real person's data.

About a third to a half of the values are written the way real text disguises
them: cards with no-break spaces, dots, double spaces, line breaks, zero-width
characters or fullwidth digits; IBANs in lower case or with dashes; ids in lower
case; phone numbers with a ``00`` international prefix or no-break spaces;
internationalised e-mail addresses; names with diacritics, apostrophes, ``Mc``/``O'``
or in capitals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..privacy._detectors import luhn_ok

__all__ = ["LabelledText", "synthetic_pii_corpus", "evaluate"]

# Deliberately not the gazetteer's list: about half of these given names are unknown to it.
_GIVEN = ("Alice Omar Priya Kenji Sofia Daniel Fatima Lucas Olga Mateo Aroha Siobhan Tariq Ingrid Kwame "
          "Anneliese Bongani Yusuf Emma Wei Thomas Lucia Jack Nadia").split()
_SURNAMES = ("Okafor Lindqvist Moreau Tanaka Novak Fernandes Brennan Kowalczyk Haddad Van-Dijk Nakamura "
             "Oyelaran Fitzgerald Rossi Schmidt Petrov Mbeki Castillo").split()
_DOMAINS = ("example.com", "mail.example.org", "corp.example.net", "uni.example.ac.uk")


@dataclass(frozen=True, slots=True)
class LabelledText:
    """A text and its PII spans as ``(kind, start, end)``."""

    text: str
    spans: tuple[tuple[str, int, int], ...]


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def _luhn_complete(r: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(r, length - len(prefix) - 1)
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _group(s: str, sizes: list[int], sep: str) -> str:
    out, pos = [], 0
    for n in sizes:
        out.append(s[pos:pos + n])
        pos += n
    return sep.join(out)


_INTL_GIVEN = "José Zoë Seán Sinéad Björn Renée João Maria Ana Chloé Søren Zoe".split()
_INTL_SURNAMES = "Núñez O'Brien McDonald D'Angelo Müller MacLeod Ångström O’Neill Ó'Súilleabháin Dvořák Çelik".split()
_INTL_LOCAL = ("józef", "müller", "zoë.ngata", "почта", "用户", "ülkü.öz", "søren")
_INTL_DOMAINS = ("bücher.example", "пример.испытание", "例子.测试", "mail.exämple.org")
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _email(r):
    if r.random() < 0.35:
        return f"{r.choice(_INTL_LOCAL)}{r.randint(1, 99)}@{r.choice(_INTL_DOMAINS + _DOMAINS)}"
    return f"{r.choice(_GIVEN).lower()}.{r.choice(_SURNAMES).lower()}{r.randint(1, 99)}@{r.choice(_DOMAINS)}"


def _disguise_number(r, groups: list[str]) -> str:
    """Digit groups joined the way pasted or typed text joins them."""
    how = r.choice(["nbsp", "dots", "double", "newline", "crlf", "zwsp", "fullwidth", "narrow"])
    if how == "fullwidth":
        return " ".join(g.translate(_FULLWIDTH) for g in groups)
    if how == "zwsp":  # zero-width characters between groups and inside one
        first = groups[0][:2] + "\u200b" + groups[0][2:]
        return "\u200b".join([first, *groups[1:]])
    sep = {"nbsp": "\u00a0", "dots": ".", "double": "  ", "newline": "\n", "crlf": "\r\n", "narrow": "\u202f"}[how]
    return sep.join(groups)


def _phone(r):
    a, e = f"{r.randint(2, 9)}{_digits(r, 2)}", f"{r.randint(2, 9)}{_digits(r, 2)}"
    if r.random() < 0.35:
        return r.choice([
            f"0044 20 {_digits(r, 4)} {_digits(r, 4)}", f"0049 30 {_digits(r, 7)}", f"0033 1 {_digits(r, 2)} {_digits(r, 2)} "
            f"{_digits(r, 2)} {_digits(r, 2)}", f"+44\u00a020\u00a0{_digits(r, 4)}\u00a0{_digits(r, 4)}",
            f"001 {a} {e} {_digits(r, 4)}",
        ])
    return r.choice([
        f"({a}) {e}-{_digits(r, 4)}", f"{a}-{e}-{_digits(r, 4)}", f"{a}.{e}.{_digits(r, 4)}",
        f"+1 {a} {e} {_digits(r, 4)}", f"+44 20 {_digits(r, 4)} {_digits(r, 4)}", f"+49 30 {_digits(r, 7)}",
        f"+33 1 {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}", f"07700 {_digits(r, 6)}",
        f"020 {_digits(r, 4)} {_digits(r, 4)}",
    ])


def _card(r):
    kind = r.choice(["visa", "mc", "amex"])
    if kind == "amex":
        num, sizes = _luhn_complete(r, r.choice(["34", "37"]), 15), [4, 6, 5]
    else:
        num, sizes = _luhn_complete(r, "4" if kind == "visa" else str(r.randint(51, 55)), 16), [4, 4, 4, 4]
    if r.random() < 0.5:
        return _disguise_number(r, _group(num, sizes, " ").split(" "))
    return _group(num, sizes, r.choice([" ", "-", ""]))


def _iban(r, valid=True):
    cc, n = r.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    bban = (_digits(r, n) if cc != "GB" else "NWBK" + _digits(r, n - 4)) if cc not in ("NL",) else "ABNA" + _digits(r, n - 4)
    num = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    check = 98 - num % 97 if valid else (98 - num % 97) % 97 + 1
    s = f"{cc}{check:02d}{bban}"
    groups = [s[i:i + 4] for i in range(0, len(s), 4)]
    if valid and r.random() < 0.45:
        how = r.choice(["lower", "dashes", "lower-dashes", "nbsp", "lower-compact"])
        text = s.lower() if how.startswith("lower") else s
        groups = [text[i:i + 4] for i in range(0, len(text), 4)]
        if how == "lower-compact":
            return text
        return ("-" if "dashes" in how else "\u00a0" if how == "nbsp" else " ").join(groups)
    return " ".join(groups) if r.random() < 0.6 else s


def _ssn(r):
    area = r.choice([r.randint(1, 665), r.randint(667, 899)])
    return f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


def _nino(r):
    first, second = "Z", "Z"
    while first + second in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ"):
        first, second = r.choice("ABCEHJKLMPRSTWXYZ"), r.choice("ABCEHJKLMPRSTWXYZ")
    d = _digits(r, 6)
    value = f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {r.choice('ABCD')}" if r.random() < 0.5 else f"{first}{second}{d}{r.choice('ABCD')}"
    return value.lower() if r.random() < 0.4 else value


def _dni(r):
    n = r.randint(10_000_000, 99_999_999)
    value = f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"
    return value.lower() if r.random() < 0.4 else value


def _sin(r):
    return _group(_luhn_complete(r, str(r.choice([1, 2, 3, 4, 5, 6, 7, 9])), 9), [3, 3, 3], r.choice([" ", "-"]))


def _ipv4(r):
    return f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


def _ipv6(r):
    groups = [f"{r.randint(0, 0xffff):x}" for _ in range(8)]
    return "2001:db8:" + ":".join(groups[2:]) if r.random() < 0.5 else f"fe80::{groups[0]}:{groups[1]}"


def _name(r):
    if r.random() < 0.5:
        name = f"{r.choice(_INTL_GIVEN)} {r.choice(_INTL_SURNAMES)}"
        return name.upper() if r.random() < 0.25 else name
    return f"{r.choice(_GIVEN)} {r.choice(_SURNAMES)}"


_MAKERS = {
    "email": (_email, ["write to {}", "my email is {}", "cc {} please"]),
    "phone": (_phone, ["call me on {}", "phone: {}", "reach the office at {}"]),
    "card": (_card, ["card number {}", "charged to {} twice", "my card {} was declined"]),
    "iban": (_iban, ["refund to IBAN {}", "account {} please", "send it to {}"]),
    "us_ssn": (_ssn, ["SSN {}", "my social security number is {}"]),
    "uk_nino": (_nino, ["NI number {}", "national insurance {}"]),
    "es_dni": (_dni, ["DNI {}", "mi DNI es {}"]),
    "ca_sin": (_sin, ["SIN {}", "my SIN is {}"]),
    "ipv4": (_ipv4, ["login from {}", "the server at {} refused"]),
    "ipv6": (_ipv6, ["seen from {}", "client address {}"]),
    "name": (_name, ["this is {} writing", "ask {} about it", "signed, {}", "Dr. {} approved it"]),
}

_NEGATIVES = [
    lambda r: f"order ORD-{r.randint(2019, 2026)}-{_digits(r, 6)}", lambda r: f"on {r.randint(2019, 2026)}-0{r.randint(1, 9)}-{r.randint(10, 28)}",
    lambda r: f"at {r.randint(10, 23)}:{r.randint(10, 59)}:{r.randint(10, 59)}", lambda r: f"version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
    lambda r: f"total ${r.randint(1, 9)},{_digits(r, 3)}.{_digits(r, 2)}", lambda r: f"invoice {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)}",
    lambda r: f"card {_bad_luhn(r)} (test)", lambda r: f"ref {_iban(r, valid=False)}", lambda r: f"code 000-{_digits(r, 2)}-{_digits(r, 4)}",
    lambda r: f"tracking {_digits(r, 12)}", lambda r: f"room {r.randint(100, 999)}, floor {r.randint(1, 9)}",
    lambda r: "the Monday Report", lambda r: "Grace period applies", lambda r: f"address 10.0.{r.randint(0, 9)}.{r.randint(256, 999)}",
    lambda r: f"{r.randint(2, 9)} x {r.randint(100, 999)} ml", lambda r: "Customer Service Team",
    # ambiguous on purpose: detectors are expected to get some of these wrong
    # Unicode look-alikes that are not PII
    lambda r: f"order ＯＲＤ-{_digits(r, 4)}".translate(_FULLWIDTH), lambda r: f"ref\u00a0{_digits(r, 4)}\u00a0{_digits(r, 4)}",
    lambda r: "Grüße aus München", lambda r: "the O'Reilly Media book", lambda r: f"Größe {r.randint(36, 46)}",
    lambda r: f"line {r.randint(1, 99)}\u200b{r.randint(1, 99)}",
    lambda r: f"ticket 0{_digits(r, 9)}", lambda r: "a can of Dr. Pepper", lambda r: f"build {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}",
]


def _bad_luhn(r):
    good = _luhn_complete(r, "4", 16)
    return good[:-1] + str((int(good[-1]) + 1) % 10)


def synthetic_pii_corpus(n: int = 600, *, seed: int = 7) -> list[LabelledText]:
    """``n`` labelled texts; each holds 1-3 PII values and 0-2 hard negatives, in
    random order. The same ``seed`` gives the same corpus."""
    r = random.Random(seed)
    kinds = list(_MAKERS)
    out = []
    for i in range(n):
        pieces: list[tuple[str | None, str]] = []
        for _ in range(r.randint(1, 3)):
            kind = kinds[(i + len(pieces)) % len(kinds)] if r.random() < 0.5 else r.choice(kinds)
            make, templates = _MAKERS[kind]
            pieces.append((kind, r.choice(templates).replace("{}", "\0" + make(r) + "\0")))
        for _ in range(r.randint(0, 2)):
            pieces.append((None, r.choice(_NEGATIVES)(r)))
        r.shuffle(pieces)
        text, spans = "", []
        for kind, piece in pieces:
            if text:
                text += r.choice(["; ", ". ", ", and ", "\n"])
            if kind is not None:
                before, value, after = piece.split("\0")
                start = len(text) + len(before)
                spans.append((kind, start, start + len(value)))
                piece = before + value + after
            text += piece
        out.append(LabelledText(text[0].upper() + text[1:], tuple(spans)))
    return out


def evaluate(corpus: list[LabelledText], find) -> dict[str, dict[str, float]]:
    """Recall and precision per kind (and ``"all"``) of ``find(text) -> findings``.

    A finding is correct when it overlaps a labelled span of the same kind.
    """
    stats: dict[str, list[int]] = {}
    for item in corpus:
        found = find(item.text)
        for kind, s, e in item.spans:
            st = stats.setdefault(kind, [0, 0, 0, 0])  # gold, gold found, predicted, predicted right
            st[0] += 1
            st[1] += any(f.kind == kind and f.start < e and f.end > s for f in found)
        for f in found:
            st = stats.setdefault(f.kind, [0, 0, 0, 0])
            st[2] += 1
            st[3] += any(k == f.kind and f.start < e and f.end > s for k, s, e in item.spans)
    total = [sum(v[i] for v in stats.values()) for i in range(4)]
    rows = {**stats, "all": total}
    return {
        k: {"gold": v[0], "recall": v[1] / v[0] if v[0] else 1.0, "predicted": v[2], "precision": v[3] / v[2] if v[2] else 1.0}
        for k, v in rows.items()
    }
