"""Reading a transaction log (CSV or JSON lines) and the deterministic rules that
pick the rows worth a model's judgement.

Everything here is plain Python over all rows: no model is called, so a log of any
length is read and scored in one pass (10,000 rows take well under a second).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from bisect import insort
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = [
    "Transaction",
    "MalformedLine",
    "ParsedLog",
    "LogFormatError",
    "parse_log",
    "TransactionRules",
    "RuleHit",
    "apply_rules",
    "AccountProfile",
    "account_profiles",
    "signal_strength",
]

#: Accepted names for each field (compared lower-case, spaces and dashes as ``_``).
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "tx_id", "txn_id", "transaction_id", "reference", "ref"),
    "timestamp": ("timestamp", "time", "datetime", "date", "ts", "created_at", "booked_at"),
    "account": ("account", "account_id", "acct", "source_account", "from_account", "card", "customer"),
    "payee": ("payee", "merchant", "beneficiary", "counterparty", "recipient", "to", "description"),
    "amount": ("amount", "value", "amt"),
    "currency": ("currency", "ccy", "cur"),
    "country": ("country", "country_code", "merchant_country"),
}
REQUIRED = ("timestamp", "account", "amount")
_ALIAS = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
_TEXT_CLIP = 160


class LogFormatError(ValueError):
    """The log as a whole cannot be read (e.g. a CSV header without an amount column)."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """One parsed row; ``line`` is its 1-based line number in the log."""

    line: int
    id: str
    timestamp: datetime
    account: str
    payee: str
    amount: float
    currency: str = ""
    country: str = ""


@dataclass(frozen=True, slots=True)
class MalformedLine:
    line: int
    reason: str
    text: str


@dataclass(slots=True)
class ParsedLog:
    format: Literal["csv", "jsonl"]
    transactions: list[Transaction] = field(default_factory=list)
    malformed: list[MalformedLine] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(self.transactions) + len(self.malformed)


def _norm_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


def _amount(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"amount {value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = re.sub(r"[\s$€£¥_']", "", str(value))
        if "," in text and "." in text:  # the last separator is the decimal one
            text = text.replace(".", "").replace(",", ".") if text.rfind(",") > text.rfind(".") else text.replace(",", "")
        elif re.fullmatch(r"-?\d+,\d{1,2}", text):  # a decimal comma: 12,50
            text = text.replace(",", ".")
        else:  # thousands commas: 1,234
            text = text.replace(",", "")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"amount {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"amount {value!r} is not finite")
    return number


_DATE_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d")


def _timestamp(value: Any) -> datetime:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric or re.fullmatch(r"\d{9,13}(\.\d+)?", str(value).strip()):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        return datetime.fromtimestamp(seconds, tz=UTC)
    text = str(value).strip()
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                ts = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"timestamp {text[:40]!r} is not ISO 8601 or epoch seconds") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _record(line: int, fields: Mapping[str, Any]) -> Transaction:
    """Build a transaction from already-normalised field names; raises ValueError."""
    missing = [f for f in REQUIRED if fields.get(f) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return Transaction(
        line=line,
        id=str(fields.get("id") or f"line-{line}").strip(),
        timestamp=_timestamp(fields["timestamp"]),
        account=str(fields["account"]).strip(),
        payee=str(fields.get("payee") or "").strip(),
        amount=_amount(fields["amount"]),
        currency=str(fields.get("currency") or "").strip().upper(),
        country=str(fields.get("country") or "").strip().upper(),
    )


def parse_log(text: str) -> ParsedLog:
    """Parse a transaction log given as CSV (with a header row) or JSON lines.

    Column order does not matter, and common column names are accepted
    (``FIELD_ALIASES``; e.g. ``merchant`` for ``payee``). ``timestamp``, ``account``
    and ``amount`` are required; the rest may be missing. A line that cannot be
    read is reported in ``malformed`` with its line number and never stops the
    parse. A JSON array of objects is accepted as well.

    Raises:
        LogFormatError: the log as a whole is unreadable (no rows, or a CSV header
            that lacks a required column).
    """
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise LogFormatError("the log is empty")
    if first.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return _parse_objects("jsonl", ((i + 1, item, json.dumps(item)) for i, item in enumerate(items)))
    if first.startswith("{"):
        return _parse_objects("jsonl", _json_lines(text))
    return _parse_csv(text, first)


def _json_lines(text: str) -> Iterator[tuple[int, Any, str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw), raw
        except json.JSONDecodeError as exc:
            yield number, ValueError(f"not valid JSON ({exc.msg})"), raw


def _parse_objects(fmt: Literal["csv", "jsonl"], items: Iterable[tuple[int, Any, str]]) -> ParsedLog:
    log = ParsedLog(fmt)
    for number, item, raw in items:
        try:
            if isinstance(item, ValueError):
                raise item
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
            fields = {}
            for key, value in item.items():
                name = _ALIAS.get(_norm_key(str(key)))
                if name is not None and name not in fields:
                    fields[name] = value
            log.transactions.append(_record(number, fields))
        except ValueError as exc:
            log.malformed.append(MalformedLine(number, str(exc), raw[:_TEXT_CLIP]))
    return log


def _parse_csv(text: str, header_line: str) -> ParsedLog:
    delimiter = max(",;\t|", key=header_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str | None] | None = None
    log = ParsedLog("csv")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a NUL byte; the reader goes on with the next line
            log.malformed.append(MalformedLine(reader.line_num, f"unreadable CSV ({exc})", ""))
            continue
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [_ALIAS.get(_norm_key(cell)) for cell in row]
            missing = [f for f in REQUIRED if f not in header]
            if missing:
                raise LogFormatError(
                    f"the CSV header ({', '.join(row)[:200]}) has no column for {', '.join(missing)}; "
                    "accepted names: " + "; ".join(f"{f}: {', '.join(FIELD_ALIASES[f])}" for f in missing)
                )
            continue
        raw = delimiter.join(row)
        if len(row) != len(header):
            log.malformed.append(MalformedLine(number, f"expected {len(header)} fields, got {len(row)}", raw[:_TEXT_CLIP]))
        else:
            fields = {name: cell for name, cell in zip(header, row) if name is not None}
            try:
                log.transactions.append(_record(number, fields))
            except ValueError as exc:
                log.malformed.append(MalformedLine(number, str(exc), raw[:_TEXT_CLIP]))
    return log


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class TransactionRules:
    """Thresholds of the deterministic rules (see :func:`apply_rules`).

    A hit is ``strong`` past the ``strong_*`` value of its rule; a row's signal is
    strong when any of its hits is strong or two different rules hit it.
    """

    velocity_count: int = 5
    velocity_window: timedelta = timedelta(minutes=10)
    strong_velocity_count: int = 10
    outlier_z: float = 3.5
    outlier_min_ratio: float = 3.0
    strong_outlier_ratio: float = 10.0
    min_history: int = 5
    new_payee_min_amount: float = 500.0
    new_payee_ratio: float = 3.0
    strong_new_payee_ratio: float = 10.0
    round_unit: float = 100.0
    round_min_amount: float = 200.0
    round_burst_count: int = 3
    round_burst_window: timedelta = timedelta(hours=1)
    duplicate_window: timedelta = timedelta(minutes=10)
    foreign_home_share: float = 0.6


@dataclass(frozen=True, slots=True)
class RuleHit:
    """Why a rule picked a row."""

    rule: str
    strength: Literal["weak", "strong"]
    reason: str


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """What the model is told about a row's account."""

    transactions: int
    median: float
    currency: str
    home_country: str
    payees: int

    def describe(self, account: str) -> str:
        home = f", home country {self.home_country}" if self.home_country else ""
        return (f"account {account}: {self.transactions} transactions in the log, median amount "
                f"{self.median:.2f}{' ' + self.currency if self.currency else ''}{home}, {self.payees} distinct payees")


def _money(tx: Transaction) -> str:
    return f"{tx.amount:,.2f}{' ' + tx.currency if tx.currency else ''}"


def _by_account(txs: Sequence[Transaction]) -> dict[str, list[Transaction]]:
    groups: dict[str, list[Transaction]] = defaultdict(list)
    for tx in txs:
        groups[tx.account].append(tx)
    for rows in groups.values():
        rows.sort(key=lambda t: (t.timestamp, t.line))
    return groups


def _home(rows: Sequence[Transaction], rules: TransactionRules) -> str:
    countries = Counter(t.country for t in rows if t.country)
    if not countries or sum(countries.values()) < rules.min_history:
        return ""
    country, n = countries.most_common(1)[0]
    return country if n / sum(countries.values()) >= rules.foreign_home_share else ""


def account_profiles(txs: Sequence[Transaction], rules: TransactionRules | None = None) -> dict[str, AccountProfile]:
    """Per-account context for the model's prompt."""
    rules = rules or TransactionRules()
    out = {}
    for account, rows in _by_account(txs).items():
        currency = Counter(t.currency for t in rows).most_common(1)[0][0]
        out[account] = AccountProfile(
            transactions=len(rows),
            median=statistics.median(t.amount for t in rows),
            currency=currency,
            home_country=_home(rows, rules),
            payees=len({t.payee for t in rows}),
        )
    return out


def _windows(rows: Sequence[Transaction], count: int, window: timedelta) -> dict[int, tuple[int, Transaction, Transaction]]:
    """Rows inside any time window of length ``window`` holding >= ``count`` rows:
    line -> (largest such window's size, its first row, its last row)."""
    marked: dict[int, tuple[int, Transaction, Transaction]] = {}
    left = 0
    for right, tx in enumerate(rows):
        while tx.timestamp - rows[left].timestamp > window:
            left += 1
        size = right - left + 1
        if size >= count:
            for t in rows[left:right + 1]:
                if t.line not in marked or marked[t.line][0] < size:
                    marked[t.line] = (size, rows[left], tx)
    return marked


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes < 1:
        return f"{delta.total_seconds():.0f} seconds"
    return f"{minutes:.0f} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def apply_rules(txs: Sequence[Transaction], rules: TransactionRules | None = None) -> dict[int, list[RuleHit]]:
    """Run every rule over every row; returns ``line -> hits`` for the rows hit.

    Rules (per account, in time order; amounts compared within one currency):

    - ``velocity``: at least ``velocity_count`` transactions within ``velocity_window``.
    - ``amount_outlier``: the amount's robust z-score (median and median absolute
      deviation of the log-amounts of the account's rows in the log) is at least
      ``outlier_z`` upwards, and the amount is ``outlier_min_ratio`` times the median.
    - ``new_payee_large``: the first payment to a payee after ``min_history`` earlier
      transactions, of at least ``new_payee_min_amount`` and ``new_payee_ratio``
      times the median of the earlier amounts.
    - ``round_amount_burst``: ``round_burst_count`` round amounts (multiples of
      ``round_unit``, at least ``round_min_amount``) within ``round_burst_window``.
    - ``duplicate``: same payee, amount and currency as a transaction less than
      ``duplicate_window`` before it.
    - ``foreign_country``: a country other than the account's home country (the
      country of at least ``foreign_home_share`` of its rows).
    """
    rules = rules or TransactionRules()
    hits: dict[int, list[RuleHit]] = defaultdict(list)
    for account, rows in _by_account(txs).items():
        for line, (size, first, last) in _windows(rows, rules.velocity_count, rules.velocity_window).items():
            strength = "strong" if size >= rules.strong_velocity_count else "weak"
            hits[line].append(RuleHit("velocity", strength, f"{size} transactions from account {account} within "
                                      f"{_minutes(last.timestamp - first.timestamp)}"))
        _outliers(rows, rules, hits)
        _new_payees(rows, rules, hits)
        round_rows = [t for t in rows if t.amount >= rules.round_min_amount
                      and round(t.amount * 100) % round(rules.round_unit * 100) == 0]
        for line, (size, first, last) in _windows(round_rows, rules.round_burst_count, rules.round_burst_window).items():
            strength = "strong" if size >= 2 * rules.round_burst_count else "weak"
            hits[line].append(RuleHit("round_amount_burst", strength, f"{size} round amounts within "
                                      f"{_minutes(last.timestamp - first.timestamp)}"))
        _duplicates(rows, rules, hits)
        home = _home(rows, rules)
        for t in rows:
            if home and t.country and t.country != home:
                hits[t.line].append(RuleHit("foreign_country", "weak", f"country {t.country}; the account's home country is {home}"))
    return dict(hits)


def _outliers(rows: Sequence[Transaction], rules: TransactionRules, hits: dict[int, list[RuleHit]]) -> None:
    by_currency: dict[str, list[Transaction]] = defaultdict(list)
    for t in rows:
        if t.amount > 0:
            by_currency[t.currency].append(t)
    for group in by_currency.values():
        if len(group) <= rules.min_history:
            continue
        logs = [math.log(t.amount) for t in group]
        center = statistics.median(logs)
        mad = statistics.median(abs(x - center) for x in logs)
        scale = mad / 0.6745 if mad > 0 else 1.2533 * statistics.fmean(abs(x - center) for x in logs)
        if scale <= 0:
            continue
        median = statistics.median(t.amount for t in group)
        for t, x in zip(group, logs):
            z, ratio = (x - center) / scale, t.amount / median
            if z >= rules.outlier_z and ratio >= rules.outlier_min_ratio:
                strength = "strong" if ratio >= rules.strong_outlier_ratio else "weak"
                hits[t.line].append(RuleHit("amount_outlier", strength, f"{_money(t)} is {ratio:.1f}x the account's "
                                            f"median {median:,.2f} (robust z {z:.1f})"))


def _new_payees(rows: Sequence[Transaction], rules: TransactionRules, hits: dict[int, list[RuleHit]]) -> None:
    seen: set[str] = set()
    earlier: list[float] = []
    for t in rows:
        if t.payee and t.payee not in seen and len(earlier) >= rules.min_history:
            median = statistics.median(earlier)
            if t.amount >= max(rules.new_payee_min_amount, rules.new_payee_ratio * median):
                ratio = t.amount / median if median > 0 else math.inf
                strength = "strong" if ratio >= rules.strong_new_payee_ratio else "weak"
                hits[t.line].append(RuleHit("new_payee_large", strength, f"first payment to {t.payee[:40]!r}, "
                                            f"{_money(t)} against an earlier median of {median:,.2f}"))
        seen.add(t.payee)
        insort(earlier, t.amount)


def _duplicates(rows: Sequence[Transaction], rules: TransactionRules, hits: dict[int, list[RuleHit]]) -> None:
    last: dict[tuple[str, float, str], Transaction] = {}
    for t in rows:
        key = (t.payee, t.amount, t.currency)
        before = last.get(key)
        if before is not None and t.timestamp - before.timestamp < rules.duplicate_window:
            hits[t.line].append(RuleHit("duplicate", "weak", f"same payee and amount as {before.id} "
                                        f"{_minutes(t.timestamp - before.timestamp)} earlier"))
        last[key] = t


def signal_strength(row_hits: Sequence[RuleHit]) -> Literal["weak", "strong"]:
    """Strong when any hit is strong or two different rules hit the row."""
    if any(h.strength == "strong" for h in row_hits) or len({h.rule for h in row_hits}) >= 2:
        return "strong"
    return "weak"
