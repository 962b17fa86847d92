"""Node factories for any ``langgraph.graph.StateGraph``: the skill node and fan-out
(the router and escalation nodes are in ``_route_nodes``).

Each node follows LangGraph's contract, ``state -> partial state``, and appends the
ledger entries of the model calls it made to the state's ``ledger`` (see
:class:`~slmgraph.graphs.SLMState` for the fields and reducers)::

    find = skill_node(extract, models=models, input="contract", output="clauses")
    builder.add_node("find", find)
    builder.add_conditional_edges("find", fan_out(lambda s: s["clauses"]["clauses"], "rate", empty="summary"))

:func:`~slmgraph.build_graph` and every ready graph are made of these same parts.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.types import Send
from pydantic import BaseModel

from .._context import EffectLog, RunContext
from .._errors import ConfigError, SlmGraphError, UnknownSkillError, UserError
from .._harden import harden_models
from .._sync import is_async
from ..ledger import PriceTable
from ..models._base import Message, Model, check_model
from ..privacy._policy import PrivacyPolicy
from ..skills._run import run_skill
from ..skills._skill import Accepted, Rejected, Skill
from ._fields import require_fields
from ._state import SLMState, run_reset

__all__ = ["Bindings", "SkillNode", "skill_node", "fan_out"]

OutT = TypeVar("OutT", bound=BaseModel)

#: The durable runner's effect store for the run in progress (set around the graph's
#: execution; LangGraph's tasks inherit it). Outside a durable run: in-memory effects.
RUN_EFFECTS: contextvars.ContextVar[Callable[[str, str], EffectLog] | None] = contextvars.ContextVar(
    "slmgraph_run_effects", default=None
)

Input = str | Callable[[Any], Any]

#: slmgraph's own state fields (:class:`SLMState`), which no node's output may take.
_SLM_FIELDS = frozenset(SLMState.__annotations__)


@dataclass(frozen=True)
class Bindings:
    """The models by binding key, the ledger's prices, and which keys are large."""

    models: Mapping[str, Model]
    prices: PriceTable = field(default_factory=PriceTable)
    large_keys: frozenset[str] = frozenset({"large"})
    #: The learning loop's capture hook (:class:`slmgraph.learn.Capture`), or ``None``.
    capture: Any = None

    @classmethod
    def of(
        cls, models: Mapping[str, Model] | Bindings, prices: PriceTable | None, large_keys: Iterable[str],
        privacy: PrivacyPolicy | None = None,
    ) -> Bindings:
        """Bindings from a node factory's arguments. A plain mapping goes through
        :func:`~slmgraph.harden` with ``privacy`` (a remote model without a privacy
        policy is refused here, at build); a :class:`Bindings` is used as it is."""
        if isinstance(models, Bindings):
            return models
        for key, model in models.items():
            check_model(model, key)
        return cls(harden_models(models, privacy=privacy), prices or PriceTable(), frozenset(large_keys))

    def context(self, state: Any, config: RunnableConfig | None, history: tuple[Message, ...] = ()) -> RunContext:
        return RunContext.fresh(self.models, self.prices, self.large_keys, history, _effects(state, config))

    def require(self, key: str, what: str) -> None:
        if key not in self.models:
            raise ConfigError(f"models.{key}", f"{what} needs a model bound to {key!r}; bind one with models={{{key!r}: ...}}")


def _get(state: Any, key: str, default: Any = None) -> Any:
    """A field of a TypedDict (dict) or pydantic state."""
    if type(state) is dict or isinstance(state, Mapping):
        return state.get(key, default)
    return getattr(state, key, default)


def _effects(state: Any, config: RunnableConfig | None) -> EffectLog | None:
    source = RUN_EFFECTS.get()
    if source is None:
        return None
    run_id = _get(state, "run_id")
    thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
    if source is None or not run_id or not thread_id:
        return None
    return source(str(thread_id), str(run_id))


class _metered:
    """On a typed error, attach the calls made so far, so a failed node's spend is
    not lost with its state update."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, SlmGraphError):
            exc.ledger = self.ctx.recorder.dump()


def as_text(request: Any) -> str:
    """A request as text, for routers and the conversation."""
    if isinstance(request, str):
        return request
    if isinstance(request, BaseModel):
        return request.model_dump_json()
    return json.dumps(request, ensure_ascii=False, default=str)


def _history(state: Any) -> tuple[Message, ...]:
    """The thread's earlier turns, without this run's request (the last message)."""
    turns = []
    for m in (_get(state, "messages") or [])[:-1]:
        role = "user" if m.type == "human" else "assistant"
        turns.append(Message(role, m.content if isinstance(m.content, str) else str(m.content)))
    return tuple(turns)


class SkillNode(Generic[OutT]):
    """A node that runs one skill (or, with a mapping, the skill named by ``state["route"]``).

    Use :func:`skill_node` to make one.
    """

    def __init__(
        self,
        skill: Skill[Any, OutT] | Mapping[str, Skill],
        *,
        models: Mapping[str, Model] | Bindings,
        input: Input = "request",
        output: str | None = None,
        on_reject: str = "escalate",
        large: str = "large",
        name: str | None = None,
        collect: bool = False,
        answer: str | None = None,
        outcome_fields: bool = False,
        starts_run: bool | type = False,
        prices: PriceTable | None = None,
        large_keys: Sequence[str] = ("large",),
        privacy: PrivacyPolicy | None = None,
    ) -> None:
        self.skills: Mapping[str, Skill] = dict(skill) if isinstance(skill, Mapping) else {skill.name: skill}
        if not self.skills:
            raise ConfigError("skill", "a skill node needs a skill")
        self.single: Skill | None = None if isinstance(skill, Mapping) else skill
        self.bind = Bindings.of(models, prices, large_keys, privacy)
        for s in self.skills.values():
            if s.runner is None:  # composite skills name their own keys
                self.bind.require(s.model, f"skill {s.name!r}")
        if callable(input) and is_async(input):
            raise ConfigError("input", "must be a state key or a plain function `state -> input`, not async; "
                              "do async work in a node before this one and read its result from the state")  # fmt: skip
        self.input = input
        self.output = output or (self.single.name if self.single else "output")
        if self.output in _SLM_FIELDS:
            raise ConfigError("output", f"{self.output!r} is one of slmgraph's own state fields "
                              f"({', '.join(sorted(_SLM_FIELDS))}); write the skill's output to a key of your own")  # fmt: skip
        self.on_reject = on_reject
        self.large = large
        self.name = name or (self.single.name if self.single else "specialist")
        self.collect = collect
        self.answer = answer
        self.outcome_fields = outcome_fields
        schema = SLMState if starts_run is True else starts_run
        self.reset = run_reset(schema, lists_only=True) if schema else {}
        #: The state keys the user named, which their state must declare.
        self._own_keys = tuple(k for k in (self.output, answer) if k is not None)
        #: Per skill: the same skill on the large model, with the same schema,
        #: repairs and checks (the confidence bar is the small tier's).
        self._large = {
            n: s.clone(model=large, acceptance=dataclasses.replace(s.acceptance, min_confidence=None))
            for n, s in self.skills.items()
        }

    def skill_of(self, state: Any) -> Skill:
        if self.single is not None:
            return self.single
        name = _get(state, "route")
        if name not in self.skills:
            raise UnknownSkillError(str(name), list(self.skills))
        return self.skills[name]

    def request_of(self, state: Any) -> Any:
        return self.input(state) if callable(self.input) else _get(state, self.input)

    def read(self, state: Any) -> OutT | None:
        """This node's accepted output in ``state``, as the skill's pydantic model
        (a list of them with ``collect``; ``None`` where a sub-task was not answered)."""
        raw = _get(state, self.output)
        skill = self.single or self.skill_of(state)
        if self.collect:
            return [None if r["output"] is None else skill.output_type.model_validate(r["output"]) for r in raw or ()]  # type: ignore[return-value]
        return None if raw is None else skill.output_type.model_validate(raw)

    def rejected(self, state: Any) -> bool:
        """Whether this node's sub-task was rejected in this run (for conditional edges)."""
        return _get(state, self.output) is None

    def branch(self, then: str | Callable[[Any], Any] = END) -> Callable[[Any], Any]:
        """A conditional edge: to ``on_reject`` when the node rejected its sub-task
        (handed off rather than escalated), otherwise to ``then`` (a node name, or a
        function of the state such as :func:`fan_out`)."""
        rejected = self.on_reject

        # Async, so LangGraph runs it on the loop rather than in a worker thread.
        async def route(state: Any) -> Any:
            if rejected != "escalate" and self.rejected(state):
                return rejected
            return then(state) if callable(then) else then

        route.__name__ = f"after_{self.name}"
        return route

    async def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        require_fields(self.name, config, ("ledger", "escalations"), own=self._own_keys)
        request = self.request_of(state)
        if request is None:
            if isinstance(self.input, str) and isinstance(state, Mapping) and self.input not in state:
                raise UserError(f"skill node {self.name!r} reads its input from state key {self.input!r}, which "
                                f"nothing has written (the state has {sorted(state)}); check the key's name, "
                                "or write None there to skip the node")  # fmt: skip
            return dict(self.reset)  # nothing to work on: an earlier sub-task was not answered
        skill = self.skill_of(state)
        ctx = self.bind.context(state, config, _history(state) if skill.memory else ())
        with _metered(ctx):
            outcome = await run_skill(skill, request, ctx, node=self.name)
            record = None
            if isinstance(outcome, Rejected):
                record = self._record(skill, outcome, "rejected")
                if self.on_reject == "escalate":
                    outcome, record = await self._escalate(skill, request, outcome, record, ctx)
        update = self._update(skill, request, outcome, record, ctx)
        if self.bind.capture is not None:  # the learning loop records the outcome
            update = await self.bind.capture.after_skill(self, state, update, config, outcome, record)
        return update

    async def _escalate(
        self, skill: Skill, request: Any, rejected: Rejected, record: dict[str, Any], ctx: RunContext,
    ) -> tuple[Accepted | Rejected, dict[str, Any]]:
        """The same sub-task on the large model: same output type, schema and checks."""
        if self.large not in self.bind.models:
            return rejected, {**record, "status": "escalation_needed"}
        first = len(ctx.recorder.entries)
        outcome = await run_skill(self._large[skill.name], request, ctx, node=self.name)
        for entry in ctx.recorder.entries[first:]:
            entry["escalation_reason"] = rejected.reason.value
        if isinstance(outcome, Accepted):
            return outcome, {**record, "status": "escalated"}
        failed = f"{rejected.detail}; the large model's answer was rejected too: {outcome.detail}"
        return rejected, {**record, "status": "escalation_failed", "detail": failed}

    def _record(self, skill: Skill, outcome: Rejected, status: str) -> dict[str, Any]:
        return {"node": self.name, "skill": skill.name, "reason": outcome.reason.value,
                "detail": outcome.detail, "draft": outcome.draft, "status": status}

    def _update(
        self, skill: Skill, request: Any, outcome: Accepted | Rejected, record: dict[str, Any] | None, ctx: RunContext,
    ) -> dict[str, Any]:
        update: dict[str, Any] = dict(self.reset)
        ledger = ctx.recorder.dump()
        update["ledger"] = [*update.get("ledger", ()), *ledger]
        if record is not None:
            update["escalations"] = [*update.get("escalations", ()), record]
        value = outcome.output.model_dump(mode="json") if isinstance(outcome, Accepted) else None
        update[self.output] = [{"input": request, "output": value}] if self.collect else value
        wants_text = self.answer is not None or self.outcome_fields
        text = skill.answer_text(outcome.output) if wants_text and isinstance(outcome, Accepted) else None
        if self.answer is not None:
            update[self.answer] = text
        if self.outcome_fields:
            update["confidence"] = outcome.confidence
            if isinstance(outcome, Accepted):
                update["status"] = "escalated" if record else "answered"
                update["messages"] = [AIMessage(text, name=skill.name)]
            else:
                update["draft"] = outcome.draft
                update["escalation_reason"] = outcome.reason.value
                update["escalation_detail"] = record["detail"] if record else outcome.detail
                if record is not None and record["status"] != "rejected":
                    update["status"] = record["status"]
        return update


def skill_node(
    skill: Skill[Any, OutT] | Mapping[str, Skill],
    *,
    models: Mapping[str, Model] | Bindings,
    input: Input = "request",
    output: str | None = None,
    on_reject: str = "escalate",
    large: str = "large",
    name: str | None = None,
    collect: bool = False,
    answer: str | None = None,
    starts_run: bool | type = False,
    prices: PriceTable | None = None,
    large_keys: Sequence[str] = ("large",),
    privacy: PrivacyPolicy | None = None,
) -> SkillNode[OutT]:
    """A LangGraph node that runs ``skill`` on its bound small model.

    Args:
        skill: the skill; or skills by name, run as the state's ``route`` names.
        models: models by binding key (the skill's ``model`` key, and ``large``),
            hardened with :func:`~slmgraph.harden` (idempotent: harden a mapping
            once and pass it to every node to share breakers and limits).
        input: the state key holding the skill's input (text, a dict or the
            input model), or a function ``state -> input``. A ``None`` input
            skips the node (an earlier sub-task was not answered).
        output: the state key the accepted output is written to, as JSON
            (default: the skill's name). ``None`` is written on rejection.
        on_reject: ``"escalate"`` asks the ``large`` model for the same typed
            output, validated by the same schema and checks; with no model bound
            to ``large`` the sub-task ends ``escalation_needed``. Any other value
            names the node that takes rejected sub-tasks: route there with
            :meth:`SkillNode.branch`.
        collect: append ``{"input": ..., "output": ...}`` to a list (for a
            fan-out target). Give the output key the reducer
            :func:`~slmgraph.graphs.add_run_list` and pass ``starts_run=`` your state
            type to the first node, so each run on a thread starts with an empty
            list (``operator.add`` would keep every earlier run's items).
        answer: a state key for the answer text (the skill's ``render``).
        starts_run: this is the graph's first node: clear what earlier runs on
            the thread left in the ledger and the escalations (``True``), or in
            every :func:`~slmgraph.graphs.add_run_list` field of the state type given.
        prices, large_keys: the ledger's price table; keys counted as large.
        privacy: the privacy gate's policy for models that leave the machine
            (required for them, as in :func:`~slmgraph.build_graph`).

    Every rejection appends a record to ``escalations``; every model call
    appends an entry to ``ledger``.

    Raises:
        StateSchemaError: on the first call, before any model call, when the
            graph's state lacks ``ledger``, ``escalations`` (add the mixin
            :class:`~slmgraph.SLMState` or :class:`~slmgraph.SLMStateModel`) or
            the ``output`` / ``answer`` key; also for a node fed by ``Send``.
    """
    return SkillNode(
        skill, models=models, input=input, output=output, on_reject=on_reject, large=large, name=name,
        collect=collect, answer=answer, starts_run=starts_run, prices=prices, large_keys=large_keys,
        privacy=privacy,
    )


def fan_out(
    items: str | Callable[[Any], Iterable[Any] | None],
    to: str,
    *,
    key: str = "item",
    empty: str = END,
) -> Callable[[Any], list[Send] | str]:
    """A conditional edge that sends each item to node ``to`` in parallel
    (LangGraph's ``Send``), with the item under ``key`` and the run id, or goes to
    ``empty`` when there is none. The models' concurrency limits
    (:class:`~slmgraph.ConcurrencyLimit`) bound how many calls run at once."""

    async def send(state: Any) -> list[Send] | str:
        found = items(state) if callable(items) else _get(state, items)
        if isinstance(found, (str, bytes, Mapping)):
            raise UserError(f"fan_out to {to!r} needs a list of items, got {type(found).__name__}; "
                            "return a list (e.g. [text] for a single item)")  # fmt: skip
        sends = [Send(to, {key: item, "run_id": _get(state, "run_id", "")}) for item in found or ()]
        return sends or empty

    send.__name__ = f"fan_out_to_{to}"
    return send
