"""Capture: the graph's escalations (and a sample of accepted answers) become records.

:class:`Capture` is the small seam the graph's nodes call: ``after_escalation`` on
every escalation, ``after_specialist`` on every specialist outcome. It turns the
state into a :class:`~slmgraph.learn.LearningRecord`, redacts it (unless the store
keeps raw records), and adds it under a key made of the run id and the node, so a
retried or resumed run never writes a second record. A configurable share of
accepted small-tier answers is spot-checked by the large model and kept as
``audit`` records; the drift monitor reads both.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from .._errors import InvalidModelOutputError, SlmGraphError
from ..graphs._nodes import _get, as_text
from ..skills._classify import ClassifyRunner
from ..skills._skill import Accepted, Skill
from ._records import LearningRecord, record_key, redactor
from ._store import LearningStore

__all__ = ["Capture", "teacher_output", "is_classifier"]

log = logging.getLogger("slmgraph.learn")

_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: Awaited with (skill, escalated, version) for each finished specialist or escalation,
#: and (skill, agreed, version) for each audit; the drift monitor implements both.
Outcome = Callable[[str, bool, "str | None"], Awaitable[None]]


def is_classifier(skill: Skill | None) -> bool:
    """A classification skill (under any versioning wrapper): its target is one label."""
    if skill is None:
        return False
    inner = getattr(skill.runner, "base", None)
    if isinstance(inner, Skill):
        return is_classifier(inner)
    return isinstance(skill.runner, ClassifyRunner)


def teacher_output(skill: Skill | None, request: str, answer: str | None, typed: Any = None) -> tuple[dict | None, bool, str | None, str | None]:
    """Read the large model's answer as the skill's typed output.

    ``typed`` is the output the escalation node already validated, when it asked
    for the skill's schema; otherwise the answer text is decoded as JSON. A
    classification skill's output is its label (a bare label is accepted).

    Returns:
        ``(output, valid, problem, label)``: the output as JSON (or ``None``),
        whether it passed the schema and the skill's check, why not, and the label
        for a classification skill.
    """
    if skill is None:
        return None, answer is not None and bool(answer.strip()), None if answer else "no answer", None
    if is_classifier(skill):
        value = typed if typed is not None else _json(answer)
        label = value.get("label") if isinstance(value, dict) else (answer or "").strip()
        if isinstance(label, str) and _LABEL.match(label.strip()):
            return {"label": label.strip()}, True, None, label.strip()
        return None, False, f"the answer is not a label: {str(label)[:80]!r}", None
    value = typed if typed is not None else _json(answer)
    if value is None:
        return None, False, "the answer is not the skill's JSON output", None
    try:
        output = skill.parse_output(value, answer or "")
    except InvalidModelOutputError as exc:
        return None, False, str(exc)[:300], None
    check = skill.acceptance.check
    if check is not None:
        try:
            problem = check(skill.parse_input(request), output)
        except (ValidationError, ValueError) as exc:
            problem = f"the check could not run: {type(exc).__name__}"
        if problem:
            return output.model_dump(mode="json"), False, str(problem)[:300], None
    return output.model_dump(mode="json"), True, None, None


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None


def _thread(config: Mapping[str, Any] | None) -> str:
    return str(((config or {}).get("configurable") or {}).get("thread_id") or "")


def _cost(entries: list[dict], tier: str = "large") -> float:
    return float(sum(e.get("cost_usd", 0.0) for e in entries if isinstance(e, dict) and e.get("tier") == tier))


class Capture:
    """Writes learning records from a graph's escalations and audited answers.

    Args:
        store: where records go.
        graph: the graph's name, kept in each record.
        graph_version: what the graph is (skill names and schemas), kept in each record.
        audit_sample: the share (0..1) of accepted small-tier answers the large
            model spot-checks; chosen by the run id, so a retry decides the same.
        raw: keep records unredacted. Off by default: every text is scrubbed of
            PII (emails, phones, cards, IBANs, national ids, IPs, names) first.
        version_of: the version serving a skill (``None``: as built).
        on_outcome, on_audit: called for every outcome and audit (the drift monitor).
        agent: the large-model agent that spot-checks audited answers (the graph's
            escalation agent).
    """

    def __init__(
        self,
        store: LearningStore,
        *,
        graph: str = "",
        graph_version: str = "",
        audit_sample: float = 0.0,
        raw: bool = False,
        version_of: Callable[[str], str | None] | None = None,
        on_outcome: Outcome | None = None,
        on_audit: Outcome | None = None,
        agent: Any = None,
    ) -> None:
        if not 0.0 <= audit_sample <= 1.0:
            from .._errors import ConfigError

            raise ConfigError("learning.audit_sample", f"must be between 0 and 1, got {audit_sample}")
        self.store = store
        self.graph = graph
        self.graph_version = graph_version
        self.audit_sample = audit_sample
        self.raw = raw
        self._redact = redactor()
        self.version_of = version_of or (lambda _s: None)
        self.on_outcome = on_outcome
        self.on_audit = on_audit
        self.agent = agent
        #: Runs a candidate in shadow on live requests (:class:`~slmgraph.learn.LiveShadow`).
        self.live: Any = None

    def _key(self, state: Any, config: Any, node: str, request: str) -> str:
        run_id = _get(state, "run_id") or ""
        if run_id:  # the request tells apart the items a fan-out sends to one node
            return record_key(run_id, node, request)
        # The native LangGraph path has no run id: the thread and the turn identify the run.
        return record_key(_thread(config), node, request, len(_get(state, "messages") or []))

    def sampled(self, state: Any, config: Any) -> bool:
        if self.audit_sample <= 0.0:
            return False
        seed = _get(state, "run_id") or self._key(state, config, "audit", as_text(_get(state, "request") or ""))
        return (zlib.crc32(str(seed).encode()) % 10_000) < self.audit_sample * 10_000

    async def _add(self, record: LearningRecord) -> None:
        if not self.raw:
            record = self._redact(record)
        try:
            await self.store.add(record)
        except SlmGraphError:
            raise
        except Exception as exc:  # a storage fault must not fail the user's run
            log.error("could not store learning record %s: %s", record.key, exc)

    def _record(self, node: Any, state: Any, config: Any, kind: str, **fields: Any) -> LearningRecord:
        request = as_text(fields.pop("request"))
        return LearningRecord(
            key=self._key(state, config, f"{kind}:{getattr(node, 'name', 'escalation')}", request),
            kind="audit" if kind == "audit" else "escalation", request=request, graph=self.graph,
            graph_version=self.graph_version, run_id=str(_get(state, "run_id") or ""), thread_id=_thread(config), **fields,
        )

    async def after_escalation(self, node: Any, state: Any, update: dict[str, Any], config: Any) -> dict[str, Any]:
        """Record one escalation answered (or not) by the escalation agent; returns ``update``."""
        skill_name = _get(state, "route")
        skill = node.skills.get(skill_name) if skill_name else None
        request = as_text(_get(state, "request") or "")
        answer = update.get("answer")
        output, valid, problem, label = teacher_output(skill, request, answer)
        if update.get("status") != "escalated":
            valid, problem = False, f"the large model did not answer ({update.get('status')})"
        version = self.version_of(skill_name) if skill_name else None
        record = self._record(
            node, state, config, "escalation", request=request, skill=skill_name, draft=_get(state, "draft"),
            escalation_reason=_get(state, "escalation_reason"), escalation_detail=_get(state, "escalation_detail"),
            teacher_answer=answer, teacher_output=output, teacher_valid=valid, teacher_problem=problem, label=label,
            cost_usd=_cost(update.get("ledger") or []), skill_version=version,
        )
        await self._add(record)
        if skill_name:
            await self._outcome(skill_name, True, version, record.cost_usd)
        return update

    async def _outcome(self, skill: str, escalated: bool, version: str | None, cost: float) -> None:
        try:
            await self.store.add_outcome(skill, version, escalated, cost, time.time())
        except Exception as exc:  # the stream report is best effort; the run goes on
            log.warning("could not count a run of %s: %s", skill, exc)
        if self.on_outcome is not None:
            await self.on_outcome(skill, escalated, version)

    async def _shadow(self, node: Any, state: Any, config: Any, skill: Skill, request: Any, version: str | None,
                      outcome: Any, record: dict[str, Any] | None) -> None:
        escalated = record is not None
        text = as_text(request)
        try:
            await self.live.offer(
                skill, request, dict(node.bind.models), node.bind.large_keys,
                key=self._key(state, config, f"shadow:{node.name}", text), run_id=str(_get(state, "run_id") or ""),
                thread_id=_thread(config), text=text, served=version, served_escalated=escalated,
                served_output=None if escalated or not isinstance(outcome, Accepted) else outcome.output.model_dump(mode="json"),
            )
        except Exception as exc:  # the shadow never fails the run it watches
            log.warning("could not start a shadow run: %s", exc)

    async def after_skill(
        self, node: Any, state: Any, update: dict[str, Any], config: Any, outcome: Any, record: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Count a skill node's outcome. A sub-task the node escalated itself (the
        large model asked for the skill's typed output) becomes a record; a sample
        of accepted answers is spot-checked by the large model (its calls join the
        node's ledger) and kept as ``audit`` records."""
        skill = node.skill_of(state)
        version = self.version_of(skill.name)
        request = node.request_of(state)
        if self.live is not None:
            await self._shadow(node, state, config, skill, request, version, outcome, record)
        if record is not None:
            if record.get("status") == "rejected":
                return update  # handed on: the escalation node (or the user's) records it
            typed = outcome.output.model_dump(mode="json") if isinstance(outcome, Accepted) else None
            output, valid, problem, label = teacher_output(skill, as_text(request), None, typed)
            if typed is None:
                valid, problem = False, record.get("detail") or record.get("status")
            rec = self._record(
                node, state, config, "escalation", request=request, skill=skill.name, draft=record.get("draft"),
                escalation_reason=record.get("reason"), escalation_detail=record.get("detail"),
                teacher_answer=json.dumps(typed) if typed is not None else None, teacher_output=output,
                teacher_valid=valid, teacher_problem=problem, label=label,
                cost_usd=_cost(update.get("ledger") or []), skill_version=version,
            )
            await self._add(rec)
            await self._outcome(skill.name, True, version, rec.cost_usd)
            return update
        await self._outcome(skill.name, False, version, 0.0)
        agent = self.agent
        if not self.sampled(state, config) or agent is None or agent.model not in node.bind.models:
            return update
        ctx = node.bind.context(state, config)
        small = outcome.output.model_dump(mode="json")
        try:
            result = await agent.run(as_text(request), draft=small, reason="audit",
                                     detail="a spot check of an accepted answer", skills={}, ctx=ctx)
        except SlmGraphError as exc:  # an audit never fails the run it checks
            log.warning("audit of run %s failed: %s", _get(state, "run_id"), exc)
            return update
        spent = ctx.recorder.dump()
        output, valid, problem, label = teacher_output(skill, as_text(request), result.answer)
        await self._add(self._record(
            node, state, config, "audit", request=request, skill=skill.name, small_output=small,
            teacher_answer=result.answer, teacher_output=output, teacher_valid=valid, teacher_problem=problem,
            label=label, cost_usd=_cost(spent), skill_version=version, weight=1.0 / self.audit_sample,
        ))
        if self.on_audit is not None and valid:
            await self.on_audit(skill.name, agrees(skill, small, output), version)
        return {**update, "ledger": [*(update.get("ledger") or []), *spent]}  # after any reset marker


def agrees(skill: Skill | None, small: Any, teacher: dict | None) -> bool:
    """Does the small tier's accepted output agree with the teacher's?"""
    if teacher is None or small is None:
        return False
    if is_classifier(skill):
        return isinstance(small, dict) and small.get("label") == teacher.get("label")
    return json.dumps(small, sort_keys=True, default=str) == json.dumps(teacher, sort_keys=True, default=str)
