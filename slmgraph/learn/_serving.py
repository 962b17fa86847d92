"""Serving learned versions: the graph reads the registry's current version per run.

:func:`with_learning` returns a copy of a graph whose skills each read, per run,
which version the registry serves (cached for ``refresh_s`` seconds, so the read
is cheap), build that version once, and run it; and whose nodes hand every
escalation and outcome to a :class:`~slmgraph.learn.Capture`. A promotion or a
rollback, from this process or another sharing the store, is therefore served
without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import SlmGraphError
from ..skills._run import run_skill
from ..skills._skill import Accepted, Rejected, Skill
from ._capture import Capture
from ._errors import SchemaMismatchError
from ._store import LearningStore, Version

__all__ = ["VersionCache", "VersionedRunner", "with_learning", "graph_version", "schema_hash", "base_skill"]

log = logging.getLogger("slmgraph.learn")

#: Builds the skill (and model overrides) that a version serves: ``(version, base) -> (skill, models)``.
Apply = Callable[[Version, Skill], Awaitable[tuple[Skill, dict[str, Any]]]]


def schema_hash(skill: Skill) -> str:
    """A short hash of the skill's output JSON schema (a version is tied to it)."""
    return hashlib.sha256(skill.output_schema_json().encode()).hexdigest()[:16]


def graph_version(name: str, skills: dict[str, Skill]) -> str:
    """What a graph is, for records: its name and each skill's name and schema."""
    body = name + "|" + "|".join(f"{n}:{schema_hash(s)}" for n, s in sorted(skills.items()))
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def base_skill(skill: Skill) -> Skill:
    """The skill as built, under any versioning wrapper."""
    return skill.runner.base if isinstance(skill.runner, VersionedRunner) else skill


class VersionCache:
    """The registry's current version per target, re-read at most every ``refresh_s``.

    Args:
        store: the learning store.
        refresh_s: how stale a read may be (``0``: read the store on every run).
    """

    def __init__(self, store: LearningStore, refresh_s: float = 1.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._seen: dict[str, tuple[float, str | None]] = {}
        self._shadow: dict[str, tuple[float, tuple[str, float] | None]] = {}

    async def current(self, target: str) -> str | None:
        now = time.monotonic()
        hit = self._seen.get(target)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        vid = await self.store.current(target)
        self._seen[target] = (now, vid)
        return vid

    async def shadow(self, target: str) -> tuple[str, float] | None:
        """The version in shadow for ``target`` and its sample share (same staleness)."""
        now = time.monotonic()
        hit = self._shadow.get(target)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        got = await self.store.shadow_of(target)
        self._shadow[target] = (now, got)
        return got

    def peek(self, target: str) -> str | None:
        """The last version read for ``target``, without a read."""
        hit = self._seen.get(target)
        return hit[1] if hit else None

    def invalidate(self, target: str | None = None) -> None:
        if target is None:
            self._seen.clear()
            self._shadow.clear()
        else:
            self._seen.pop(target, None)
            self._shadow.pop(target, None)


class VersionedRunner:
    """A skill runner that serves the registry's current version of ``base``.

    A version that cannot be built (its schema no longer matches the skill's, its
    adapter file is gone) is logged once and the skill as built serves instead:
    a broken version never fails a user's run.
    """

    def __init__(self, base: Skill, cache: VersionCache, apply: Apply) -> None:
        self.base = base
        self.cache = cache
        self.apply = apply
        self._built: dict[str, tuple[Skill, dict[str, Any]]] = {}
        self._broken: set[str] = set()
        self._lock = asyncio.Lock()

    async def resolve(self, version_id: str | None) -> tuple[Skill, dict[str, Any]]:
        """The skill and model overrides serving ``version_id`` (built once)."""
        if version_id is None or version_id in self._broken:
            return self.base, {}
        if version_id in self._built:
            return self._built[version_id]
        async with self._lock:
            if version_id not in self._built:
                try:
                    version = await self.cache.store.version(version_id)
                    if version.output_schema and version.output_schema != schema_hash(self.base):
                        raise SchemaMismatchError(
                            f"version {version_id!r} was made for another output schema of skill "
                            f"{self.base.name!r}; learn a new version (`slmgraph learn run`)"
                        )
                    self._built[version_id] = await self.apply(version, self.base)
                except SlmGraphError as exc:
                    log.error("cannot serve version %s of %s (%s); serving the skill as built", version_id, self.base.name, exc)
                    self._broken.add(version_id)
                    return self.base, {}
        return self._built[version_id]

    async def __call__(self, skill: Skill, data: Any, ctx: Any, node: str) -> Accepted | Rejected:
        served, models = await self.resolve(await self.cache.current(self.base.name))
        if models:
            ctx = dataclasses.replace(ctx, models={**ctx.models, **models})
        if served.runner is None:
            return await run_skill(served, data, ctx, node=node)
        return await served.runner(served, data, ctx, node)


def with_learning(
    graph: Any,
    store: LearningStore,
    *,
    apply: Apply | None = None,
    audit_sample: float = 0.0,
    raw: bool = False,
    refresh_s: float = 1.0,
    monitor: Any = None,
    shadow_pending: int = 2,
) -> Any:
    """A copy of ``graph`` that learns: it records escalations (and an audited
    sample of accepted answers) in ``store``, and serves each skill's current
    version from the store's registry, re-read at most every ``refresh_s`` seconds.

    Args:
        graph: an :class:`~slmgraph.SLMGraph`.
        store: the learning store (records and the version registry).
        apply: builds a version's skill; default: the built-in strategies.
        audit_sample: share of accepted answers spot-checked by the large model.
        raw: store records unredacted (off by default).
        monitor: a :class:`~slmgraph.learn.DriftMonitor` fed with every outcome.
        shadow_pending: shadow runs in flight at most, when a candidate is in
            shadow on live traffic (``slmgraph learn shadow``); ``0``: never shadow.

    Returns:
        A new graph (same checkpoint, same models); ``graph`` itself is unchanged.
    """
    from ..graphs._graph import SLMGraph
    from ._live import LiveShadow
    from ._strategies import apply_version, remember_settings

    cache = VersionCache(store, refresh_s)
    spec = graph.spec
    bases = {n: base_skill(s) for n, s in spec.skills.items()}
    for s in bases.values():
        remember_settings(s)
    skills = {n: s.clone(runner=VersionedRunner(s, cache, apply or apply_version)) for n, s in bases.items()}
    capture = Capture(
        store,
        graph=graph.name,
        graph_version=graph_version(graph.name, bases),
        audit_sample=audit_sample,
        raw=raw,
        version_of=cache.peek,
        on_outcome=monitor.outcome if monitor is not None else None,
        on_audit=monitor.audit if monitor is not None else None,
        agent=spec.escalation,
    )
    if shadow_pending > 0:
        capture.live = LiveShadow(store, cache, max_pending=shadow_pending,
                                  redact=None if raw else capture._redact)  # type: ignore[arg-type]
    if monitor is not None:
        monitor.attach(store, cache)
    learned = SLMGraph(dataclasses.replace(spec, skills=skills, capture=capture), checkpoint=graph.checkpoint, name=graph.name)
    learned.learning = cache  # type: ignore[attr-defined]
    learned.shadow = capture.live  # type: ignore[attr-defined]
    return learned
