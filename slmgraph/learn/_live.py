"""Shadow on live traffic: a candidate runs beside the served version and never answers.

``slmgraph learn shadow VERSION`` (or :meth:`Learner.cycle` with ``live_sample``)
puts a candidate in shadow for its skill. A learning graph then runs the candidate
on a sample of that skill's live requests (chosen by the run id), after the served
version has produced the user's answer:

- in a background task, bounded by ``max_pending`` (a request that finds the
  shadow busy is skipped and counted, never queued), so the served answer never
  waits for it;
- on a fresh context holding only the small-tier models, so it cannot call the
  large model, and nothing it does reaches the user's state or ledger;
- its result (what it would have answered, or that it would have escalated, and
  its own cost) is stored as a :class:`~slmgraph.learn.ShadowResult`, keyed by the
  run and node so a retried run stores one.

:func:`live_report` turns the results into the same :class:`ShadowReport` as the
holdout evaluation: the run's escalation or audit record, when there is one, is the
teacher's answer that scores both sides; escalation rate and cost come from every
result. :meth:`Learner.judge_live` applies the same promotion rule.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from .._context import RunContext
from ..skills._run import run_skill
from ..skills._skill import Accepted, Skill
from ._records import LearningRecord, ShadowResult
from ._shadow import Outcome, ShadowReport, Side, bootstrap, decide, default_score

__all__ = ["LiveShadow", "live_report", "in_sample"]

log = logging.getLogger("slmgraph.learn")


def in_sample(seed: str, share: float) -> bool:
    """Whether a run (by its id) is in a ``share`` sample of live traffic; independent
    of the audit sample, and the same on a retry."""
    return share > 0.0 and (zlib.crc32(("shadow:" + seed).encode()) % 10_000) < share * 10_000


class LiveShadow:
    """Runs the candidate in shadow, if one is set, on sampled live requests.

    Args:
        store: the learning store (where the shadow assignment and results live).
        cache: the serving graph's version cache (reads the assignment cheaply).
        max_pending: shadow runs in flight at most; more are skipped.
        redact: applied to each result before it is stored.

    Attributes:
        ran, skipped, failed: counts since the graph was built.
    """

    def __init__(self, store: Any, cache: Any, *, max_pending: int = 2,
                 redact: Callable[[ShadowResult], ShadowResult] | None = None) -> None:
        self.store, self.cache, self.max_pending = store, cache, max(1, max_pending)
        self.redact = redact
        self._tasks: set[asyncio.Task] = set()
        self.ran = self.skipped = self.failed = 0

    async def offer(self, skill: Skill, request: Any, models: dict[str, Any], large_keys: frozenset[str], *,
                    key: str, run_id: str, thread_id: str, text: str, served: str | None,
                    served_escalated: bool, served_output: Any) -> None:
        """Start a shadow run of ``skill``'s candidate on ``request`` if one is set
        and the run is sampled; returns at once."""
        runner = skill.runner
        target = getattr(runner, "base", skill).name
        got = await self.cache.shadow(target)
        if got is None:
            return
        candidate, share = got
        if candidate == served or not in_sample(run_id or key, share):
            return
        if len(self._tasks) >= self.max_pending:
            self.skipped += 1
            return
        small = {k: m for k, m in models.items() if k not in large_keys}
        base = ShadowResult(key=key, target=target, candidate=candidate, served=served, run_id=run_id,
                            thread_id=thread_id, request=text, served_escalated=served_escalated,
                            served_output=served_output, candidate_escalated=True)
        task = asyncio.get_running_loop().create_task(self._run(runner, request, small, base), name=f"shadow:{target}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, runner: Any, request: Any, small: dict[str, Any], base: ShadowResult) -> None:
        await asyncio.sleep(0)  # let the served run go on first
        try:
            built, overrides = await runner.resolve(base.candidate)
            if built is runner.base:
                raise LookupError(f"version {base.candidate} cannot be built")
            ctx = RunContext.fresh({**small, **overrides}, None, frozenset())
            out = await run_skill(built, request, ctx, node="shadow")
            cost = float(sum(e.get("cost_usd", 0.0) for e in ctx.recorder.dump()))
            if isinstance(out, Accepted):
                result = base.model_copy(update={"candidate_escalated": False, "candidate_cost": cost,
                                                 "candidate_output": out.output.model_dump(mode="json")})
            else:
                result = base.model_copy(update={"candidate_cost": cost, "candidate_reason": out.reason.value})
            if self.redact is not None:
                result = self.redact(result)
            await self.store.add_shadow(result)
            self.ran += 1
        except Exception as exc:  # a shadow run never affects anything served
            self.failed += 1
            log.warning("shadow run of %s failed: %s", base.candidate, exc)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for the shadow runs in flight (tests, benchmarks, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def live_report(
    skill: Skill,
    results: Sequence[ShadowResult],
    records: Sequence[LearningRecord],
    *,
    margin: float = 0.02,
    min_labelled: int = 10,
    score: Callable[[Skill, LearningRecord, Any], float] = default_score,
) -> ShadowReport:
    """The candidate against the served version on its shadow results.

    Escalation rate and cost are over every result; quality over the results whose
    run has a valid teacher answer (an escalation, an audit or a correction), each
    weighted as its record is (an audit stands for ``1 / audit_sample`` requests).
    With fewer than ``min_labelled`` of those, the report never promotes.
    """
    teacher = {(r.run_id, r.request): r for r in records if r.run_id and r.teacher_valid and r.target() is not None}
    paid = [r.cost_usd for r in records if r.kind == "escalation" and r.cost_usd > 0]
    mean_cost = sum(paid) / len(paid) if paid else 0.0
    served: list[Outcome] = []
    cand: list[Outcome] = []
    q_served: list[Outcome] = []
    q_cand: list[Outcome] = []
    for res in results:
        rec = teacher.get((res.run_id, res.request))
        big = rec.cost_usd if rec is not None and rec.kind == "escalation" and rec.cost_usd else mean_cost
        qs = 1.0 if res.served_escalated or rec is None else score(skill, rec, res.served_output)
        qc = 1.0 if res.candidate_escalated or rec is None else score(skill, rec, res.candidate_output)
        served.append(Outcome(res.served_escalated, qs, big if res.served_escalated else 0.0))
        cand.append(Outcome(res.candidate_escalated, qc, res.candidate_cost + (big if res.candidate_escalated else 0.0)))
        if rec is not None:
            q_served.append(Outcome(res.served_escalated, qs, 0.0, rec.weight))
            q_cand.append(Outcome(res.candidate_escalated, qc, 0.0, rec.weight))

    def side(version: str | None, all_: list[Outcome], labelled: list[Outcome]) -> Side:
        whole = Side.of(version, all_)
        whole.quality = bootstrap([o.quality for o in labelled], [o.weight for o in labelled])
        return whole

    current_id = results[0].served if results else None
    cand_id = results[0].candidate if results else ""
    diff = bootstrap([b.quality - a.quality for a, b in zip(q_served, q_cand)], [a.weight for a in q_served])
    report = ShadowReport(len(results), side(current_id, served, q_served), side(cand_id, cand, q_cand), diff, margin)
    report.extra.update({"source": "live", "labelled": len(q_cand)})
    if len(q_cand) < min_labelled:
        report.promote, report.why = False, (f"too few live results with a teacher answer ({len(q_cand)} of "
                                             f"{len(results)}; need {min_labelled})")
    else:
        report.promote, report.why = decide(report)
    return report
