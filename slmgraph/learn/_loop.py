"""The learning loop: snapshot -> specialise -> shadow-evaluate -> promote; drift -> roll back.

:class:`Learner` runs one cycle per target on demand (``slmgraph learn run``,
or every N requests in a benchmark). :class:`DriftMonitor` watches a promoted
version's live escalation rate and its disagreement with the large model's spot
checks, and rolls it back, recording why, when either rises beyond its bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from ..models._embed import Embedder
from ..skills._skill import Skill
from ._curate import curate
from ._errors import EmptySnapshotError, UnknownVersionError
from ._serving import VersionCache, base_skill
from ._shadow import ShadowReport, compare, shadow_run
from ._store import Event, LearningStore, Snapshot, Version
from ._strategies import MemoryStrategy, Strategy, apply_version, remember_settings

__all__ = ["Learner", "CycleResult", "DriftMonitor"]

log = logging.getLogger("slmgraph.learn")


@dataclass(slots=True)
class CycleResult:
    """What one learning cycle did for one target."""

    target: str
    snapshot: Snapshot
    candidate: Version | None
    report: ShadowReport | None
    promoted: bool
    note: str = ""


class Learner:
    """Runs learning cycles for a graph's skills.

    Args:
        store: the learning store the graph captures into.
        skills: the graph's skills (``graph.skills``; versioned wrappers are unwrapped).
        models: the graph's models (``graph.spec.models``); shadow runs use the small tier.
        strategy: how candidates are made (default :class:`MemoryStrategy`).
        embedder: for near-duplicate removal (``None``: exact duplicates only).
        near, holdout: curation settings (see :func:`~slmgraph.learn.curate`).
        margin: how much worse on quality (the interval's lower bound) a candidate may be.
        cache: the serving graph's version cache, refreshed after a promotion.
        progress: draw progress bars.
    """

    def __init__(
        self,
        store: LearningStore,
        skills: Mapping[str, Skill],
        models: Mapping[str, Any],
        *,
        strategy: Strategy | None = None,
        embedder: Embedder | None = None,
        near: float = 0.97,
        holdout: float = 0.2,
        margin: float = 0.02,
        cache: VersionCache | None = None,
        progress: bool = False,
    ) -> None:
        self.store = store
        self.skills = {n: base_skill(s) for n, s in skills.items()}
        for s in self.skills.values():
            remember_settings(s)
        self.models = dict(models)
        self.strategy = strategy or MemoryStrategy()
        self.embedder = embedder
        self.near, self.holdout, self.margin = near, holdout, margin
        self.cache = cache
        self.progress = progress

    @classmethod
    def for_graph(cls, graph: Any, store: LearningStore, **kwargs: Any) -> Learner:
        """A learner for ``graph`` (plain, or returned by :func:`with_learning`)."""
        cache = getattr(graph, "learning", None)
        return cls(store, graph.spec.skills, graph.spec.models, cache=kwargs.pop("cache", cache), **kwargs)

    def _skill(self, target: str) -> Skill:
        if target not in self.skills:
            raise UnknownVersionError("target", target, sorted(self.skills))
        return self.skills[target]

    async def snapshot(self, target: str) -> Snapshot:
        """Curate the target's records into a stored snapshot."""
        self._skill(target)
        records = await self.store.records(skill=target)
        snap = await curate(records, target=target, embedder=self.embedder, near=self.near,
                            holdout=self.holdout, progress=self.progress)
        await self.store.save_snapshot(snap)
        return snap

    async def serving(self, target: str, version_id: str | None) -> tuple[Skill, dict[str, Any]]:
        base = self._skill(target)
        if version_id is None:
            return base, {}
        return await apply_version(await self.store.version(version_id), base)

    async def evaluate(self, candidate: Version, snapshot: Snapshot, current: str | None) -> ShadowReport:
        """Shadow-evaluate ``candidate`` against ``current`` on the snapshot's holdout."""
        if not snapshot.holdout:
            raise EmptySnapshotError(f"snapshot {snapshot.id} has no holdout", "use a holdout share above 0 and more records")
        now_skill, now_models = await self.serving(candidate.target, current)
        new_skill, new_models = await apply_version(candidate, self._skill(candidate.target))
        before = await shadow_run(now_skill, snapshot.holdout, self.models, overrides=now_models)
        after = await shadow_run(new_skill, snapshot.holdout, self.models, overrides=new_models)
        report = compare(current, before, candidate.id, after, margin=self.margin)
        report.extra["snapshot"] = snapshot.id
        return report

    async def cycle(self, target: str, *, promote: bool = True, live_sample: float | None = None) -> CycleResult:
        """One cycle: snapshot, propose, shadow-evaluate, and promote if it passes.

        With ``live_sample``, a candidate that passes on the holdout is not promoted
        yet: it goes into shadow on that share of live traffic, and
        :meth:`judge_live` promotes it (or not) on its live results."""
        snap = await self.snapshot(target)
        current = await self.store.current(target)
        parent = await self.store.version(current) if current else None
        candidate = await self.strategy.propose(self._skill(target), snap, parent)
        if candidate.id == current:
            await self.store.log(Event(target=target, kind="cycle", version=current, detail={"note": "no change", "snapshot": snap.id}))
            return CycleResult(target, snap, None, None, False, "the candidate is the current version")
        await self.store.save_version(candidate)
        report = await self.evaluate(candidate, snap, current)
        candidate.evaluation = report.to_dict()
        await self.store.save_version(candidate)
        await self.store.log(Event(target=target, kind="evaluated", version=candidate.id, detail=candidate.evaluation))
        if report.promote and promote and live_sample:
            await self.store.set_shadow(target, candidate.id, live_sample, reason=report.why)
            if self.cache is not None:
                self.cache.invalidate(target)
            return CycleResult(target, snap, candidate, report, False, f"in shadow on {live_sample:.0%} of live traffic: {report.why}")
        promoted = bool(report.promote and promote)
        if promoted:
            await self.promote(candidate.id, reason=report.why)
        return CycleResult(target, snap, candidate, report, promoted, report.why)

    async def judge_live(self, version_id: str, *, promote: bool = True, min_labelled: int = 10) -> ShadowReport:
        """Judge a candidate on its shadow results on live traffic, by the same rule
        as on the holdout, and promote it if it passes (its shadow then stops).

        Raises:
            UnknownVersionError: no such version.
        """
        from ._live import live_report

        version = await self.store.version(version_id)
        results = await self.store.shadow_results(version_id)
        records = await self.store.records(skill=version.target)
        report = live_report(self._skill(version.target), results, records, margin=self.margin, min_labelled=min_labelled)
        holdout = version.evaluation
        version.evaluation = {**report.to_dict(), "holdout": holdout}
        await self.store.save_version(version)
        await self.store.log(Event(target=version.target, kind="evaluated", version=version_id, detail=version.evaluation))
        if report.promote and promote:
            await self.promote(version_id, reason=f"live shadow: {report.why}")
            if (await self.store.shadow_of(version.target) or ("",))[0] == version_id:
                await self.store.set_shadow(version.target, None, reason="promoted")
        return report

    async def promote(self, version_id: str, *, reason: str = "manual") -> None:
        version = await self.store.version(version_id)
        self._skill(version.target)
        await self.store.promote(version.target, version_id, reason)
        if self.cache is not None:
            self.cache.invalidate(version.target)

    async def rollback(self, target: str, *, reason: str = "manual") -> str | None:
        self._skill(target)
        now = await self.store.rollback(target, reason)
        if self.cache is not None:
            self.cache.invalidate(target)
        return now


class DriftMonitor:
    """Rolls a promoted version back when it drifts, and records why.

    After a promotion it keeps the last ``window`` outcomes of the version being
    served. Once it has ``min_runs`` of them, it rolls back when the live
    escalation rate exceeds the rate the shadow evaluation expected plus
    ``escalation_margin``; once it has ``min_audits`` spot checks, when the share
    that disagree with the large model exceeds ``disagreement_bound``.
    """

    def __init__(
        self, *, window: int = 200, min_runs: int = 50, escalation_margin: float = 0.10,
        min_audits: int = 10, disagreement_bound: float = 0.25,
    ) -> None:
        if window < 1 or min_runs < 1 or min_audits < 1 or min_runs > window:
            raise ConfigError("learning.drift", "window, min_runs and min_audits must be >= 1, min_runs <= window")
        self.window, self.min_runs, self.margin = window, min_runs, escalation_margin
        self.min_audits, self.bound = min_audits, disagreement_bound
        self.store: LearningStore | None = None
        self.cache: VersionCache | None = None
        self._runs: dict[tuple[str, str], deque[bool]] = {}
        self._audits: dict[tuple[str, str], deque[bool]] = {}
        self._expected: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.rollbacks: list[Event] = []

    def attach(self, store: LearningStore, cache: VersionCache) -> None:
        self.store, self.cache = store, cache

    async def _expected_rate(self, version: str) -> float:
        if version not in self._expected:
            assert self.store is not None
            v = await self.store.version(version)
            ev = (v.evaluation or {}).get("candidate", {})
            self._expected[version] = float((ev.get("escalation_rate") or [0.0])[0])
        return self._expected[version]

    async def outcome(self, skill: str, escalated: bool, version: str | None) -> None:
        if version is None or self.store is None:
            return
        tally = self._runs.setdefault((skill, version), deque(maxlen=self.window))
        tally.append(escalated)
        if len(tally) < self.min_runs:
            return
        rate, expected = sum(tally) / len(tally), await self._expected_rate(version)
        if rate > expected + self.margin:
            await self._roll(skill, version, f"live escalation rate {rate:.3f} over the last {len(tally)} runs "
                             f"exceeds the expected {expected:.3f} + {self.margin:.3f}", {"live_escalation_rate": rate})

    async def audit(self, skill: str, agreed: bool, version: str | None) -> None:
        if version is None or self.store is None:
            return
        tally = self._audits.setdefault((skill, version), deque(maxlen=self.window))
        tally.append(not agreed)
        if len(tally) < self.min_audits:
            return
        rate = sum(tally) / len(tally)
        if rate > self.bound:
            await self._roll(skill, version, f"{rate:.0%} of the last {len(tally)} spot checks disagree with the "
                             f"large model (bound {self.bound:.0%})", {"disagreement": rate})

    async def _roll(self, skill: str, version: str, reason: str, detail: dict[str, Any]) -> None:
        assert self.store is not None
        async with self._lock:
            if (skill, version) not in self._runs and (skill, version) not in self._audits:
                return  # already rolled back by a concurrent run
            now = await self.store.rollback(skill, reason, {"automatic": True, **detail}, only_if=version)
            self._runs.pop((skill, version), None)
            self._audits.pop((skill, version), None)
            if self.cache is not None:
                self.cache.invalidate(skill)
            log.warning("rolled back %s from %s to %s: %s", skill, version, now or "the skill as built", reason)
            self.rollbacks.append(Event(target=skill, kind="rollback", version=now, detail={"reason": reason, "from": version}))
