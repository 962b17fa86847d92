"""Choosing confidence thresholds offline, and writing them to a config file.

The graph runs once over the data with every threshold at 0 (nothing escalates for
low confidence), recording each row's route confidence, acceptance confidence and
the small and large models' scores. Any pair of thresholds can then be judged
without another model call: a row escalates when its escalation was forced (none
fits, invalid output, failed check, error), or its route confidence is below
``route_threshold``, or its acceptance confidence is below ``min_confidence``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["Thresholds", "OperatingPoint", "Calibration", "evaluate_thresholds", "sweep_thresholds", "write_thresholds"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    route_threshold: float
    min_confidence: float


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What a pair of thresholds gives on a set of rows."""

    thresholds: Thresholds
    quality: float
    share: float  # of rows sent to the large model
    cost_per_1000: float
    rows: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """The chosen thresholds, on the calibration split and on the held-out split."""

    target_quality: float
    chosen: OperatingPoint
    reached: bool
    holdout: OperatingPoint | None
    holdout_target: float | None
    holdout_reached: bool | None
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conf(x: float | None) -> float:
    return 1.0 if x is None else float(x)


def evaluate_thresholds(records: Sequence[dict[str, Any]], t: Thresholds, *, large_call_cost: float) -> OperatingPoint:
    """Quality, large-model share and cost of ``t`` on ``records`` (no model calls)."""
    n = len(records)
    if not n:
        raise ConfigError("calibrate", "no rows to evaluate thresholds on")
    quality = escalated = small_cost = 0.0
    for r in records:
        esc = r["forced"] or _conf(r["route_confidence"]) < t.route_threshold or _conf(r["confidence"]) < t.min_confidence
        escalated += esc
        quality += (r["large_score"] or 0.0) if esc else r["small_score"]
        small_cost += r["small_cost_usd"]
    share = escalated / n
    return OperatingPoint(t, quality / n, share, 1000 * (small_cost / n + share * large_call_cost), n)


def _candidates(values: Sequence[float], limit: int = 60) -> list[float]:
    """0 and the observed values (a threshold equal to a value keeps that value), thinned
    to at most ``limit`` quantiles."""
    xs = sorted({min(1.0, max(0.0, v)) for v in values} | {0.0})
    if len(xs) > limit:
        xs = sorted({xs[round(i * (len(xs) - 1) / (limit - 1))] for i in range(limit)})
    return xs


def sweep_thresholds(
    records: Sequence[dict[str, Any]],
    *,
    target: float,
    large_call_cost: float,
    holdout: Sequence[dict[str, Any]] = (),
    tune_route: bool = True,
    tune_acceptance: bool = True,
) -> Calibration:
    """The cheapest thresholds whose quality on ``records`` reaches ``target`` times the
    large model's quality there; ties go to higher quality, then lower thresholds.
    When no pair reaches it, the highest-quality pair is chosen (``reached=False``).
    The choice is then measured on ``holdout``.
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError("target", f"must be in (0, 1], got {target}")
    if any(r.get("large_score") is None for r in records):
        raise ConfigError("calibrate", "the large model's score is unknown for some rows; calibrate with the oracle or recorded answers")
    live = [r for r in records if not r["forced"]]
    routes = _candidates([_conf(r["route_confidence"]) for r in live]) if tune_route else [0.0]
    confs = _candidates([_conf(r["confidence"]) for r in live]) if tune_acceptance else [0.0]
    large_q = sum(r["large_score"] for r in records) / len(records)
    goal = target * large_q
    best: OperatingPoint | None = None
    best_key: tuple = ()
    for tr in routes:
        for ta in confs:
            p = evaluate_thresholds(records, Thresholds(tr, ta), large_call_cost=large_call_cost)
            ok = p.quality >= goal - 1e-12
            key = (ok, -p.cost_per_1000 if ok else p.quality, p.quality if ok else -p.cost_per_1000, -tr, -ta)
            if best is None or key > best_key:
                best, best_key = p, key
    assert best is not None
    hold = hold_goal = hold_ok = None
    if holdout:
        hold = evaluate_thresholds(holdout, best.thresholds, large_call_cost=large_call_cost)
        known = [r["large_score"] for r in holdout if r.get("large_score") is not None]
        hold_goal = target * (sum(known) / len(known)) if known else None
        hold_ok = hold.quality >= hold_goal - 1e-12 if hold_goal is not None else None
    return Calibration(goal, best, bool(best_key[0]), hold, hold_goal, hold_ok, len(routes) * len(confs))


_TOP_KEY = re.compile(r"^\s*route_threshold\s*=")
_TABLE = re.compile(r"^\s*\[")


def write_thresholds(path: str | Path, t: Thresholds, *, skill_key: str = "*") -> Path:
    """Set ``route_threshold`` and ``[min_confidence] "<skill_key>"`` in a TOML config
    file, keeping everything else in it (the file is created if missing)."""
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines() if p.exists() else []
    out: list[str] = []
    in_table = skipping = False
    for line in lines:
        if _TABLE.match(line):
            in_table = True
            skipping = line.split("#", 1)[0].strip() == "[min_confidence]"
            if skipping:
                continue
        if skipping or (not in_table and _TOP_KEY.match(line)):
            continue
        out.append(line)
    first_table = next((i for i, line in enumerate(out) if _TABLE.match(line)), len(out))
    out.insert(first_table, f"route_threshold = {t.route_threshold:.6g}  # written by slmgraph calibrate")
    while out and not out[-1].strip():
        out.pop()
    out += ["", "[min_confidence]  # written by slmgraph calibrate", f'"{skill_key}" = {t.min_confidence:.6g}']
    text = "\n".join(out) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - guards the line editing above
        raise ConfigError("config", f"updating {p} would make it invalid TOML ({exc}); edit it by hand") from None
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p
