"""A synthetic transaction log with planted anomalies, for examples, tests and demos.

Normal traffic: each account pays a handful of regular payees in its home country,
a few times a day, with log-normal amounts around its own median (amounts carry
cents, so they are rarely round). Anomalies of each kind the rules look for are
planted at known ids; nothing here is real data.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["SyntheticLog", "synthetic_transaction_log", "ANOMALY_KINDS"]

ANOMALY_KINDS = ("amount_outlier", "new_payee_large", "velocity", "round_amount_burst", "duplicate", "foreign_country")
_PAYEES = ("Corner Grocery", "City Transit", "Northwind Energy", "Blue Cafe", "Pharma Plus", "Book Nook",
           "Metro Gym", "Fresh Market", "Cloud Music", "Harbor Fuel", "Pet Planet", "Tech Depot")
_COUNTRIES = ("DE", "FR", "NL", "ES", "IT")
_FIELDS = ("id", "timestamp", "account", "payee", "amount", "currency", "country")
START = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SyntheticLog:
    """The log text, and the planted anomalies: transaction id -> kind."""

    text: str
    planted: dict[str, str]
    rows: int


def synthetic_transaction_log(
    rows: int = 200,
    *,
    seed: int = 0,
    fmt: str = "csv",
    anomaly_every: int = 200,
    malformed: int = 0,
    kinds: Sequence[str] = ANOMALY_KINDS,
) -> SyntheticLog:
    """Generate ``rows`` transaction rows (plus ``malformed`` unreadable lines).

    Args:
        rows: data rows, anomalies included.
        seed: the random seed; the same arguments give the same log.
        fmt: ``"csv"`` (with a header) or ``"jsonl"``.
        anomaly_every: plant about one anomaly group per this many rows (at least
            one of each kind when ``rows`` allows).
        malformed: unreadable lines inserted at random places.
        kinds: the anomaly kinds to plant, in turn (a subset of ``ANOMALY_KINDS``).
    """
    unknown = set(kinds) - set(ANOMALY_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {ANOMALY_KINDS}; got {sorted(unknown) or 'none'}")
    rng = random.Random(seed)
    n_accounts = max(3, rows // 100)
    accounts = []
    for i in range(n_accounts):
        accounts.append({
            "id": f"AC{i:04d}",
            "median": rng.uniform(15, 150),
            "country": rng.choice(_COUNTRIES),
            "payees": rng.sample(_PAYEES, 5),
            "clock": START + timedelta(minutes=rng.uniform(0, 600)),
        })
    records: list[dict] = []
    planted: dict[str, str] = {}

    def add(acct: dict, *, amount: float | None = None, payee: str | None = None, country: str | None = None,
            gap: timedelta | None = None, kind: str | None = None) -> dict:
        acct["clock"] += gap if gap is not None else timedelta(minutes=rng.uniform(90, 900))
        value = amount if amount is not None else round(acct["median"] * math.exp(rng.gauss(0, 0.45)), 2)
        if amount is None and value == round(value):
            value += 0.37
        rec = {"id": f"T{len(records):06d}", "timestamp": acct["clock"].isoformat(timespec="seconds"),
               "account": acct["id"], "payee": payee or rng.choice(acct["payees"]), "amount": value,
               "currency": "EUR", "country": country or acct["country"]}
        records.append(rec)
        if kind:
            planted[rec["id"]] = kind
        return rec

    groups = max(len(kinds), rows // max(1, anomaly_every))
    budget = rows - 10 * groups  # room for the longest anomaly group
    schedule = sorted(rng.sample(range(max(1, budget)), min(groups, max(1, budget))))
    queue = [kinds[i % len(kinds)] for i in range(len(schedule))]
    history_needed = 12 * n_accounts
    while len(records) < rows:
        acct = rng.choice(accounts)
        if schedule and len(records) >= max(schedule[0], history_needed) and len(records) < rows - 10:
            schedule.pop(0)
            _plant(queue.pop(0), acct, add, rng)
            continue
        add(acct)
    del records[rows:]
    planted = {k: v for k, v in planted.items() if int(k[1:]) < rows}
    records.sort(key=lambda r: r["timestamp"])
    lines = _render(records, fmt)
    for i in range(malformed):
        at = rng.randrange(1, len(lines) + 1)
        lines.insert(at, "this line is not a transaction" if fmt == "jsonl" or i % 2 else "T?,yesterday,AC0000,x,abc,EUR,DE")
    return SyntheticLog("\n".join(lines) + "\n", planted, rows)


def _plant(kind: str, acct: dict, add, rng: random.Random) -> None:
    median = acct["median"]
    if kind == "amount_outlier":
        add(acct, amount=round(median * rng.uniform(25, 40), 2) + 0.11, kind=kind)
    elif kind == "new_payee_large":
        add(acct, amount=round(max(900.0, median * 20), 2) + 0.5, payee=f"Offshore Holdings {rng.randint(10, 99)}", kind=kind)
    elif kind == "velocity":
        for _ in range(7):
            add(acct, gap=timedelta(seconds=rng.uniform(20, 70)), kind=kind)
    elif kind == "round_amount_burst":
        for amount in (500.0, 1000.0, 1000.0, 2000.0):
            add(acct, amount=amount, payee="Cash Machine", gap=timedelta(minutes=rng.uniform(3, 12)), kind=kind)
    elif kind == "duplicate":
        first = add(acct)
        add(acct, amount=first["amount"], payee=first["payee"], gap=timedelta(minutes=2), kind=kind)
    elif kind == "foreign_country":
        add(acct, country="BR", kind=kind)


def _render(records: list[dict], fmt: str) -> list[str]:
    if fmt == "jsonl":
        return [json.dumps(r) for r in records]
    if fmt != "csv":
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    out = [",".join(_FIELDS)]
    for r in records:
        out.append(",".join(f"{r[f]:.2f}" if f == "amount" else str(r[f]) for f in _FIELDS))
    return out
