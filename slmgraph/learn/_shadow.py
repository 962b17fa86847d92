"""Shadow evaluation: a candidate against the current version on a holdout.

Each holdout record is run through both versions on the small tier, never
answering anyone. Where a version accepts, its answer is scored against the
teacher's (or the human correction); where it gives up, the request would
escalate, so it scores as the teacher's answer and costs what the record's
large-model calls cost. Quality, escalation rate and cost come with paired
bootstrap confidence intervals; :func:`decide` promotes only a candidate that is
not worse on quality (the interval's lower bound of the difference is above
``-margin``) and escalates less or costs less.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._context import RunContext
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._run import run_skill
from ..skills._skill import Accepted, Skill
from ._capture import is_classifier
from ._errors import EmptySnapshotError
from ._records import LearningRecord

__all__ = ["Outcome", "Side", "ShadowReport", "shadow_run", "compare", "decide", "bootstrap"]

#: ``score(skill, record, output) -> 0..1``: how good an accepted output is.
Scorer = Callable[[Skill, LearningRecord, Any], float]


def default_score(skill: Skill, record: LearningRecord, output: Any) -> float:
    """1 when the accepted output matches the teacher's target, else 0."""
    if is_classifier(skill):
        return float(isinstance(output, dict) and output.get("label") == record.label)
    want = record.teacher_output
    return float(json.dumps(output, sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One version on one record (``weight``: the live requests it stands for)."""

    escalated: bool
    quality: float
    cost: float
    weight: float = 1.0


async def shadow_run(
    skill: Skill,
    records: Sequence[LearningRecord],
    models: Mapping[str, Model],
    *,
    overrides: Mapping[str, Model] | None = None,
    prices: PriceTable | None = None,
    score: Scorer = default_score,
    teacher_cost: float | None = None,
) -> list[Outcome]:
    """Run ``skill`` on each record's request on the small tier (never answering)."""
    bound = {**models, **(overrides or {})}
    mean_cost = teacher_cost if teacher_cost is not None else _mean([r.cost_usd for r in records if r.cost_usd > 0])
    out = []
    for r in records:
        ctx = RunContext.fresh(bound, prices, frozenset({"large"}))
        result = await run_skill(skill, r.request, ctx, node="shadow")
        small = sum(e["cost_usd"] for e in ctx.recorder.dump())
        if isinstance(result, Accepted):
            out.append(Outcome(False, score(skill, r, result.output.model_dump(mode="json")), small, r.weight))
        else:
            # It would escalate: the teacher answers (escalation records cost what they
            # cost; an audited request would cost one teacher call).
            teacher = r.cost_usd if r.kind != "audit" and r.cost_usd else (mean_cost or r.cost_usd)
            out.append(Outcome(True, 1.0, small + teacher, r.weight))
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def bootstrap(
    values: Sequence[float], weights: Sequence[float] | None = None, *, rounds: int = 2000, level: float = 0.95, seed: int = 7,
) -> tuple[float, float, float]:
    """The (weighted) mean of ``values`` and its percentile bootstrap interval."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return 0.0, 0.0, 0.0
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(v), size=(rounds, len(v)))
    means = (v[pick] * w[pick]).sum(axis=1) / np.maximum(w[pick].sum(axis=1), 1e-12)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float((v * w).sum() / w.sum()), float(lo), float(hi)


@dataclass(slots=True)
class Side:
    """One version's figures: each a (mean, low, high) interval."""

    version: str | None
    quality: tuple[float, float, float]
    escalation_rate: tuple[float, float, float]
    cost: tuple[float, float, float]

    @classmethod
    def of(cls, version: str | None, outcomes: Sequence[Outcome]) -> Side:
        w = [o.weight for o in outcomes]
        return cls(version, bootstrap([o.quality for o in outcomes], w),
                   bootstrap([float(o.escalated) for o in outcomes], w), bootstrap([o.cost for o in outcomes], w))


@dataclass(slots=True)
class ShadowReport:
    """A candidate against the current version on the same records.

    Attributes:
        quality_diff: candidate minus current, paired, with its interval.
        promote: the decision; ``why`` says which rule decided it.
    """

    n: int
    current: Side
    candidate: Side
    quality_diff: tuple[float, float, float]
    margin: float
    promote: bool = False
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {"version": s.version, "quality": s.quality, "escalation_rate": s.escalation_rate, "cost": s.cost}
        return {"n": self.n, "current": side(self.current), "candidate": side(self.candidate),
                "quality_diff": self.quality_diff, "margin": self.margin, "promote": self.promote, "why": self.why, **self.extra}


def compare(current_id: str | None, current: Sequence[Outcome], candidate_id: str, candidate: Sequence[Outcome], *, margin: float = 0.02) -> ShadowReport:
    """Paired comparison of two versions' outcomes on the same records, with the decision.

    Raises:
        EmptySnapshotError: there is nothing to compare.
    """
    if not current or len(current) != len(candidate):
        raise EmptySnapshotError("the holdout is empty", "curate a snapshot with a holdout share above 0 and enough records")
    diff = bootstrap([b.quality - a.quality for a, b in zip(current, candidate)], [a.weight for a in current])
    report = ShadowReport(len(current), Side.of(current_id, current), Side.of(candidate_id, candidate), diff, margin)
    report.promote, report.why = decide(report)
    return report


_TIE = 1e-9


def decide(report: ShadowReport) -> tuple[bool, str]:
    """Promote only when not worse on quality (the difference's lower bound is at
    least ``-margin``) and the candidate escalates less or costs less."""
    lo = report.quality_diff[1]
    if lo < -report.margin:
        return False, f"worse on quality: the difference's lower bound {lo:+.3f} is below -{report.margin:.3f}"
    cur, cand = report.current, report.candidate
    # "Less" means less by more than rounding: a candidate that behaves the same is not promoted.
    if cand.escalation_rate[0] < cur.escalation_rate[0] - _TIE:
        return True, f"escalates less ({cand.escalation_rate[0]:.3f} vs {cur.escalation_rate[0]:.3f}), quality not worse"
    if cand.cost[0] < cur.cost[0] * (1 - _TIE) - _TIE:
        return True, f"costs less (${cand.cost[0]:.6f} vs ${cur.cost[0]:.6f} a request), quality not worse"
    return False, "neither escalates less nor costs less than the current version"
