"""The routed graph's router and escalation nodes, for any ``StateGraph``:
:func:`router_node` starts a run and picks a skill; :func:`escalation_node` hands
what the small tier could not do to the large model's agent."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from .._errors import ConfigError, EmptyRequestError, EscalationError, UnknownSkillError
from ..agents._escalation import EscalationAgent
from ..agents._router import Router
from ..ledger import PriceTable
from ..models._base import Model
from ..privacy._policy import PrivacyPolicy
from ..skills._skill import EscalationReason, Skill
from ._fields import GRAPH_MIXIN, require_fields
from ._nodes import Bindings, _get, _metered, as_text
from ._state import NEW_RUN, GraphState, run_reset

__all__ = ["RouterNode", "router_node", "EscalationNode", "escalation_node"]

#: What the router reads and writes, and its branch reads: the routed graph's state.
_ROUTER_FIELDS = ("request", "messages", "route", "route_confidence", "escalation_reason", "escalation_detail", "ledger")


class RouterNode:
    """The routed graph's first node: starts the run, picks a skill. Use :func:`router_node`."""

    def __init__(
        self, router: Router, skills: Sequence[Skill], *, models: Mapping[str, Model] | Bindings,
        threshold: float = 0.5, prices: PriceTable | None = None, large_keys: Sequence[str] = ("large",),
        privacy: PrivacyPolicy | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError("route_threshold", f"must be between 0 and 1, got {threshold}")
        self.router, self.skills, self.threshold = router, list(skills), threshold
        self.names = {s.name for s in self.skills}
        self.bind = Bindings.of(models, prices, large_keys, privacy)
        self.reset = run_reset(GraphState)

    async def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        require_fields("router", config, _ROUTER_FIELDS, GRAPH_MIXIN)
        ctx = self.bind.context(state, config)
        request = _get(state, "request")
        if not request or (isinstance(request, str) and not request.strip()):
            raise EmptyRequestError()  # as SLMGraph refuses it, so the compiled graph does too
        text = as_text(request)
        with _metered(ctx):
            decision = await self.router.route(text, self.skills, ctx)
        if decision.skill is not None and decision.skill not in self.names:
            raise UnknownSkillError(decision.skill, sorted(self.names))
        update = self._stale(state)
        update.update(messages=[HumanMessage(text)], route=decision.skill, route_confidence=decision.confidence)
        update["ledger"] = [*update.get("ledger", ()), *ctx.recorder.dump()]
        if decision.skill is None:
            update["escalation_reason"] = EscalationReason.NONE_FITS.value
            update["escalation_detail"] = "the router found no skill that fits the request"
        elif decision.confidence < self.threshold:
            update["escalation_reason"] = EscalationReason.LOW_ROUTE_CONFIDENCE.value
            update["escalation_detail"] = (
                f"route {decision.skill!r} has confidence {decision.confidence:.2f}, "
                f"below the threshold {self.threshold:.2f}"
            )
        return update

    def _stale(self, state: Any) -> dict[str, Any]:
        """The reset, for the fields an earlier run on the thread left set (a fresh
        thread needs none of it)."""
        out = {}
        for key, empty in self.reset.items():
            now = _get(state, key)
            if now is None or now == empty or (empty == [NEW_RUN] and not now):
                continue
            out[key] = empty
        return out

    def branch(self, to: str | Mapping[str, str] = "specialist", otherwise: str = "escalation") -> Callable[[Any], str]:
        """A conditional edge: to ``otherwise`` when no skill fits confidently, else to
        ``to`` (one node, or the node of each skill by name)."""

        async def route(state: Any) -> str:
            if _get(state, "escalation_reason"):
                return otherwise
            return to if isinstance(to, str) else to[_get(state, "route")]

        route.__name__ = "after_router"
        return route


def router_node(
    router: Router, skills: Sequence[Skill], *, models: Mapping[str, Model] | Bindings,
    threshold: float = 0.5, prices: PriceTable | None = None, large_keys: Sequence[str] = ("large",),
    privacy: PrivacyPolicy | None = None,
) -> RouterNode:
    """A LangGraph node that routes ``state["request"]`` to one of ``skills``.

    It is a graph's first node: it starts the run, clearing every run-scoped
    field of :class:`~slmgraph.GraphState` (the conversation stays), and writes
    ``route`` and ``route_confidence``; a decision with no skill, or below
    ``threshold``, sets ``escalation_reason``. Route on with :meth:`RouterNode.branch`.
    """
    return RouterNode(router, skills, models=models, threshold=threshold, prices=prices, large_keys=large_keys,
                      privacy=privacy)


class EscalationNode:
    """The large-model node of a routed graph. Use :func:`escalation_node`."""

    def __init__(
        self, agent: EscalationAgent, skills: Mapping[str, Skill], *, models: Mapping[str, Model] | Bindings,
        prices: PriceTable | None = None, large_keys: Sequence[str] = ("large",), privacy: PrivacyPolicy | None = None,
    ) -> None:
        self.agent, self.skills = agent, dict(skills)
        self.bind = Bindings.of(models, prices, large_keys, privacy)
        for n in agent.tools or ():
            if n not in self.skills:
                raise UnknownSkillError(n, list(self.skills))

    async def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        require_fields("escalation", config, ("ledger", "escalations"))
        reason = _get(state, "escalation_reason") or ""
        record = {"node": "escalation", "skill": _get(state, "route"), "reason": reason,
                  "detail": _get(state, "escalation_detail") or "", "draft": _get(state, "draft")}
        if not reason:  # handed off by a skill node of the user's own graph: its record says why
            handed = next((e for e in reversed(_get(state, "escalations") or ()) if e.get("status") == "rejected"), None)
            if handed is not None:
                reason = handed.get("reason") or ""
                record.update(skill=record["skill"] or handed.get("skill"), reason=reason,
                              detail=handed.get("detail") or "", draft=handed.get("draft"))
        update = await self._run(state, config, reason, record)
        if self.bind.capture is not None:  # the learning loop records the escalation
            update = await self.bind.capture.after_escalation(self, state, update, config)
        return update

    async def _run(self, state: Any, config: RunnableConfig, reason: str, record: dict[str, Any]) -> dict[str, Any]:
        if self.agent.model not in self.bind.models:
            return {"status": "escalation_needed", "answer": None, "escalations": [{**record, "status": "escalation_needed"}]}
        ctx = self.bind.context(state, config)
        try:
            with _metered(ctx):
                result = await self.agent.run(
                    as_text(_get(state, "request")), draft=_get(state, "draft"), reason=reason,
                    detail=record["detail"], skills=self.skills, ctx=ctx,
                )
        except EscalationError as exc:
            return {
                "status": "escalation_failed",
                "answer": None,
                "escalation_detail": f"{record['detail']}; the large model failed: {exc}".lstrip("; "),
                "error": type(exc).__name__,
                "tool_calls": [dataclasses.asdict(c) for c in getattr(exc, "tool_calls", ())],
                "ledger": ctx.recorder.dump(),
                "escalations": [{**record, "status": "escalation_failed"}],
            }
        return {
            "answer": result.answer,
            "status": "escalated",
            "tool_calls": [dataclasses.asdict(c) for c in result.tool_calls],
            "messages": [AIMessage(result.answer, name="escalation")],
            "ledger": ctx.recorder.dump(),
            # The record carries the answer too: a state of the user's own may have no
            # ``answer`` field, and LangGraph drops writes to fields a state lacks.
            "escalations": [{**record, "status": "escalated", "answer": result.answer}],
        }


def escalation_node(
    agent: EscalationAgent | None = None, skills: Mapping[str, Skill] | Sequence[Skill] = (), *,
    models: Mapping[str, Model] | Bindings, prices: PriceTable | None = None, large_keys: Sequence[str] = ("large",),
    privacy: PrivacyPolicy | None = None,
) -> EscalationNode:
    """A LangGraph node that hands the request to the large model's agent, with the
    specialist's ``draft`` and the ``escalation_reason`` from the state; the agent
    may call ``skills`` as tools. With no model bound to the agent's key the run
    ends ``escalation_needed``, the draft kept."""
    by_name = dict(skills) if isinstance(skills, Mapping) else {s.name: s for s in skills}
    return EscalationNode(agent or EscalationAgent(), by_name, models=models, prices=prices, large_keys=large_keys,
                          privacy=privacy)

