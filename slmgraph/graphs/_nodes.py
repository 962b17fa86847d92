"""The three node functions of a routed graph: router, specialist, escalation.

Each node follows LangGraph's contract, ``state -> partial state``, and appends the
ledger entries of the model calls it made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import asdict as dc_asdict
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from .._context import EffectLog, RunContext
from .._errors import EscalationError, SlmGraphError, UnknownSkillError
from ..agents._escalation import EscalationAgent
from ..agents._router import Router
from ..ledger import PriceTable
from ..models._base import Message, Model
from ..skills._run import run_skill
from ..skills._skill import Accepted, EscalationReason, Skill
from ._durable import OnBusy, StoredEffects
from ._runs import RunStore
from ._state import NO_LARGE_MODEL, GraphState

__all__ = ["GraphSpec", "Nodes"]


@contextlib.contextmanager
def _metered(ctx: RunContext) -> Iterator[None]:
    """On a typed error, attach the calls made so far, so a failed node's spend is
    not lost with its state update."""
    try:
        yield
    except SlmGraphError as exc:
        exc.ledger = ctx.recorder.dump()
        raise


@dataclass(frozen=True)
class GraphSpec:
    """Everything a graph's nodes need, fixed when the graph is built."""

    skills: Mapping[str, Skill]
    models: Mapping[str, Model]
    router: Router
    escalation: EscalationAgent
    route_threshold: float
    prices: PriceTable
    large_keys: frozenset[str]
    on_busy: OnBusy = "wait"
    busy_timeout_s: float = 300.0
    lease_ttl_s: float = 30.0
    #: The learning loop's capture hook (:class:`slmgraph.learn.Capture`), or ``None``.
    capture: Any = None

    def context(self, history: tuple[Message, ...] = (), effects: EffectLog | None = None) -> RunContext:
        return RunContext.fresh(self.models, self.prices, self.large_keys, history, effects)


class Nodes:
    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        #: The runs store of the graph's checkpoint file, set when a run starts.
        self.store: RunStore | None = None

    def _effects(self, state: GraphState, config: RunnableConfig | None) -> EffectLog | None:
        run_id = state.get("run_id")
        thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
        if self.store is None or not run_id or not thread_id:
            return None
        return StoredEffects(self.store, str(thread_id), run_id)

    async def router(self, state: GraphState, config: RunnableConfig) -> GraphState:
        ctx = self.spec.context(effects=self._effects(state, config))
        request = state["request"]
        with _metered(ctx):
            decision = await self.spec.router.route(request, list(self.spec.skills.values()), ctx)
        if decision.skill is not None and decision.skill not in self.spec.skills:
            raise UnknownSkillError(decision.skill, list(self.spec.skills))
        update: GraphState = {
            "messages": [HumanMessage(request)],
            "route": decision.skill,
            "route_confidence": decision.confidence,
            "status": "running",
            "ledger": ctx.recorder.dump(),
        }
        if decision.skill is None:
            update["escalation_reason"] = EscalationReason.NONE_FITS.value
            update["escalation_detail"] = "the router found no skill that fits the request"
        elif decision.confidence < self.spec.route_threshold:
            update["escalation_reason"] = EscalationReason.LOW_ROUTE_CONFIDENCE.value
            update["escalation_detail"] = (
                f"route {decision.skill!r} has confidence {decision.confidence:.2f}, "
                f"below the threshold {self.spec.route_threshold:.2f}"
            )
        return update

    async def specialist(self, state: GraphState, config: RunnableConfig) -> GraphState:
        skill = self.spec.skills[state["route"]]
        ctx = self.spec.context(_history(state) if skill.memory else (), self._effects(state, config))
        with _metered(ctx):
            outcome = await run_skill(skill, state["request"], ctx)
        if isinstance(outcome, Accepted):
            output = outcome.output.model_dump(mode="json")
            answer = skill.answer_text(outcome.output)
            update: GraphState = {
                "output": output,
                "confidence": outcome.confidence,
                "answer": answer,
                "status": "answered",
                "messages": [AIMessage(answer, name=skill.name)],
                "ledger": ctx.recorder.dump(),
            }
            return await self._captured("after_specialist", state, update, config)
        return {
            "draft": outcome.draft,
            "confidence": outcome.confidence,
            "escalation_reason": outcome.reason.value,
            "escalation_detail": outcome.detail,
            "ledger": ctx.recorder.dump(),
        }

    async def escalation(self, state: GraphState, config: RunnableConfig) -> GraphState:
        if self.spec.escalation.model not in self.spec.models:
            return await self._captured("after_escalation", state, {"status": "escalation_needed", "answer": None}, config)
        ctx = self.spec.context(effects=self._effects(state, config))
        try:
            with _metered(ctx):
                result = await self.spec.escalation.run(
                    state["request"],
                    draft=state.get("draft"),
                    reason=state.get("escalation_reason") or "",
                    detail=state.get("escalation_detail") or "",
                    skills=self.spec.skills,
                    ctx=ctx,
                )
        except EscalationError as exc:
            failed: GraphState = {
                "status": "escalation_failed",
                "answer": None,
                "escalation_detail": f"{state.get('escalation_detail') or ''}; the large model failed: {exc}".lstrip("; "),
                "error": type(exc).__name__,
                "tool_calls": [dc_asdict(c) for c in getattr(exc, "tool_calls", ())],
                "ledger": ctx.recorder.dump(),
            }
            return await self._captured("after_escalation", state, failed, config)
        update: GraphState = {
            "answer": result.answer,
            "status": "escalated",
            "tool_calls": [dc_asdict(c) for c in result.tool_calls],
            "messages": [AIMessage(result.answer, name="escalation")],
            "ledger": ctx.recorder.dump(),
        }
        return await self._captured("after_escalation", state, update, config)

    async def _captured(self, hook: str, state: GraphState, update: GraphState, config: RunnableConfig | None) -> GraphState:
        """Hand a node's outcome to the learning loop's capture hook, if one is set."""
        if self.spec.capture is None:
            return update
        return await getattr(self.spec.capture, hook)(self.spec, state, update, config)

    @staticmethod
    def after_router(state: GraphState) -> str:
        return "escalation" if state.get("escalation_reason") else "specialist"

    @staticmethod
    def after_specialist(state: GraphState) -> str:
        return "end" if state.get("status") == "answered" else "escalation"


def _history(state: GraphState) -> tuple[Message, ...]:
    """The thread's earlier turns, without this run's request (the last message)."""
    turns = []
    for m in state.get("messages", [])[:-1]:
        role = "user" if m.type == "human" else "assistant"
        turns.append(Message(role, m.content if isinstance(m.content, str) else str(m.content)))
    return tuple(turns)


def outcome_message(state: GraphState) -> str:
    status = state.get("status")
    if status == "answered":
        return f"answered by skill {state.get('route')!r}"
    if status == "escalated":
        return f"escalated ({state.get('escalation_reason')}) and answered by the large model"
    if status == "escalation_failed":
        return f"escalated ({state.get('escalation_reason')}) but the large model did not finish; the draft is kept"
    if status == "escalation_needed":
        return f"{NO_LARGE_MODEL}; reason: {state.get('escalation_reason')}; the specialist's draft is kept"
    return "the run has not finished; resume it with its thread id"
