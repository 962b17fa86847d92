"""The routed graph (router -> specialist -> accept, or -> escalation), built from the
node factories, and :class:`SLMGraph`, a graph composed with its durable runner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from .._context import check_fits
from .._errors import ConfigError, EmptyRequestError, RequestError, UnknownSkillError
from .._harden import harden_models
from .._sync import iterate_sync, run_sync
from ..agents._escalation import EscalationAgent
from ..agents._router import ModelRouter, Router, RulesRouter, check_router, model_keys_of, skill_names_of
from ..ledger import PriceTable
from ..models._base import Message, Model, check_model
from ..privacy._policy import PrivacyPolicy
from ..skills._skill import Skill
from ._durable import OnBusy
from ._nodes import Bindings, SkillNode, as_text
from ._route_nodes import EscalationNode, RouterNode
from ._result import RunResult
from ._runner import Checkpoint, NodeEvent, Runner, RunPolicy, as_input
from ._runs import RunRecord
from ._state import GraphState

__all__ = ["SLMGraph", "NodeEvent", "GraphSpec", "build_graph", "routed_graph", "DEFAULT_CHECKPOINT"]

#: Where runs are checkpointed unless told otherwise.
DEFAULT_CHECKPOINT = Path(".slmgraph") / "checkpoints.sqlite"

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass(frozen=True)
class GraphSpec:
    """Everything a graph is built from, fixed when it is built.

    Attributes:
        shape: builds the (uncompiled) LangGraph graph from the spec; the routed
            shape by default, a pipeline for the pipeline blueprints.
        output_skill: the skill whose output is the run's ``output``; ``None``:
            the skill the router chose.
        request_skills: the skills that take the request whole (its size is
            checked against their models); ``None``: every skill.
    """

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
    shape: Callable[[GraphSpec], StateGraph] | None = None
    output_skill: str | None = None
    request_skills: tuple[str, ...] | None = None
    #: The learning loop's capture hook (set by :func:`slmgraph.learn.with_learning`).
    capture: Any = None

    @property
    def bindings(self) -> Bindings:
        return Bindings(self.models, self.prices, self.large_keys, self.capture)


def routed_graph(spec: GraphSpec) -> StateGraph:
    """router -> specialist -> END, or -> escalation -> END, from the node factories."""
    bind = spec.bindings
    router = RouterNode(spec.router, list(spec.skills.values()), models=bind, threshold=spec.route_threshold)
    specialist = SkillNode(spec.skills, models=bind, output="output", on_reject="escalation",
                           answer="answer", outcome_fields=True, name="specialist")
    builder = StateGraph(GraphState)
    builder.add_node("router", router)
    builder.add_node("specialist", specialist)
    builder.add_node("escalation", EscalationNode(spec.escalation, spec.skills, models=bind))
    builder.add_edge(START, "router")
    builder.add_conditional_edges("router", router.branch("specialist", "escalation"), ["specialist", "escalation"])
    builder.add_conditional_edges("specialist", specialist.branch(END), [END, "escalation"])
    builder.add_edge("escalation", END)
    return builder


def build_graph(
    skills: Sequence[Skill[Any, OutT]],
    *,
    models: Mapping[str, Model],
    router: Router | None = None,
    route_threshold: float = 0.5,
    escalation: EscalationAgent | None = None,
    prices: PriceTable | None = None,
    checkpoint: Checkpoint = DEFAULT_CHECKPOINT,
    large_keys: Sequence[str] = ("large",),
    name: str = "slmgraph",
    on_busy: OnBusy = "wait",
    busy_timeout_s: float = 300.0,
    lease_ttl_s: float = 30.0,
    shape: Callable[[GraphSpec], StateGraph] | None = None,
    output_skill: str | None = None,
    request_skills: Sequence[str] | None = None,
    harden: bool = True,
    privacy: PrivacyPolicy | None = None,
) -> SLMGraph[OutT]:
    """Compose skills into a routed graph (or, with ``shape``, any graph of skill nodes).

    Args:
        skills: the specialists; names must be unique.
        models: models by binding key. Skills, the router and the escalation agent
            name keys (``"small"``, ``"large"``, ...), never backends.
        router: picks a skill; defaults to a :class:`ModelRouter` on ``"small"``
            (or, with one skill, always that skill).
        route_threshold: decisions below this confidence escalate.
        escalation: the large-model agent; with no model bound to its key,
            escalations end as ``escalation_needed`` with the draft kept.
        prices: the price table for the ledger; its ``baseline_model`` prices
            the all-on-the-large-model comparison.
        checkpoint: SQLite file path (default ``.slmgraph/checkpoints.sqlite``), a
            PostgreSQL DSN (``postgresql://...``, shared by processes and machines;
            the ``postgres`` extra), a LangGraph checkpointer, or ``None`` for no
            persistence.
        large_keys: binding keys whose calls count as large-model calls.
        on_busy: when another run holds the thread (in this process or another
            sharing the SQLite file): ``"wait"`` for it, up to ``busy_timeout_s``,
            or ``"reject"`` with :class:`~slmgraph.ThreadBusyError`.
        lease_ttl_s: how long a thread lease lasts without renewal; it bounds how
            long a hung process on another host can hold a thread (on this host
            a dead process's lease is freed at once).
        shape: builds the graph from the :class:`GraphSpec` (default: :func:`routed_graph`).
        output_skill: the skill whose output is the run's ``output`` (default: the routed one).
        request_skills: the skills that take the request whole (default: all).
        harden: put every model through :func:`~slmgraph.harden` (retry, breaker,
            concurrency limit, privacy gate); ``False`` uses the models as given.
        privacy: the policy of the privacy gate for models that leave the machine;
            a remote model without one is refused with :class:`ConfigError`.

    Raises:
        ConfigError, UnknownSkillError: at build time, never mid-run.
    """
    if not skills:
        raise ConfigError("skills", "a graph needs at least one skill")
    by_name: dict[str, Skill] = {}
    for s in skills:
        if s.name in by_name:
            raise ConfigError("skills", f"two skills are named {s.name!r}")
        by_name[s.name] = s
    policy = RunPolicy(on_busy, busy_timeout_s, lease_ttl_s)
    if not 0.0 <= route_threshold <= 1.0:
        raise ConfigError("route_threshold", f"must be between 0 and 1, got {route_threshold}")
    if router is None:
        router = RulesRouter([], default=skills[0].name) if len(skills) == 1 else ModelRouter()
    check_router(router)
    for n in skill_names_of(router):
        if n not in by_name:
            raise UnknownSkillError(n, list(by_name))
    for n in ([output_skill] if output_skill else []) + list(request_skills or ()):
        if n not in by_name:
            raise UnknownSkillError(n, list(by_name))
    escalation = escalation or EscalationAgent()
    needed = {s.model for s in skills} | model_keys_of(router)
    for key in sorted(needed):
        if key not in models:
            raise ConfigError(f"models.{key}", f"no model is bound to {key!r}; bind one with models={{{key!r}: ...}}")
    for key, model in models.items():
        check_model(model, key)
    if harden:
        models = harden_models(models, privacy=privacy)
    spec = GraphSpec(
        skills=by_name, models=dict(models), router=router, escalation=escalation,
        route_threshold=route_threshold, prices=prices or PriceTable(), large_keys=frozenset(large_keys),
        on_busy=policy.on_busy, busy_timeout_s=policy.busy_timeout_s, lease_ttl_s=policy.lease_ttl_s,
        shape=shape, output_skill=output_skill,
        request_skills=tuple(request_skills) if request_skills is not None else None,
    )
    return SLMGraph(spec, checkpoint=checkpoint, name=name)


class SLMGraph(Generic[OutT]):
    """A graph of skill nodes composed with its durable :class:`Runner`: an async
    API, thin sync wrappers, and runs that survive a crash.

    Every accepted request is recorded in a runs table (in the checkpoint's SQLite
    file) before the graph starts; :meth:`arecover` finishes the runs a crash left.
    One run at a time holds a thread. See docs/durability.md.

    What a run means lives in the graph itself, so :meth:`compile` gives the same
    results on a thread for LangGraph's own tooling (``langgraph dev``, Studio).
    """

    def __init__(self, spec: GraphSpec, *, checkpoint: Checkpoint, name: str) -> None:
        self.spec = spec
        self.name = name
        self.checkpoint = checkpoint
        # Composite skills (with a runner) chunk or batch their own calls, so the
        # request is only checked against the models that take it whole.
        whole = spec.skills.values() if spec.request_skills is None else [spec.skills[n] for n in spec.request_skills]
        keys = {s.model for s in whole if s.runner is None} | model_keys_of(spec.router)
        #: The skill that takes every request, when there is one (its input shape is checked up front).
        self._taker = next(iter(whole)) if len(whole) == 1 else None
        self._small_models = [spec.models[k] for k in sorted(keys)]
        self.builder = (spec.shape or routed_graph)(spec)
        self.runner = Runner(
            self.builder, checkpoint=checkpoint, name=name,
            policy=RunPolicy(spec.on_busy, spec.busy_timeout_s, spec.lease_ttl_s),
            result=self.result_of, validate=self.validate_request,
        )

    @property
    def skills(self) -> Mapping[str, Skill]:
        return self.spec.skills

    def with_checkpoint(self, checkpoint: Checkpoint) -> SLMGraph[OutT]:
        """The same graph, checkpointed elsewhere."""
        return SLMGraph(self.spec, checkpoint=checkpoint, name=self.name)

    def compile(self, checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
        """The underlying LangGraph graph, compiled with ``checkpointer``."""
        return self.builder.compile(checkpointer=checkpointer, name=self.name)

    def validate_request(self, request: str | dict | BaseModel) -> str | dict:
        """Refuse an empty request, or one that cannot fit a small model's context.
        A pydantic input becomes its JSON form (what the state holds).

        Raises:
            EmptyRequestError, RequestTooLargeError; RequestShapeError when the one
            skill that takes the request needs other fields; RequestError for any
            other type.
        """
        request = as_input(request)
        if isinstance(request, str):
            if not request.strip():
                raise EmptyRequestError()
        elif not isinstance(request, dict):
            raise RequestError(f"a request is text, a dict or a pydantic model, not {type(request).__name__}")
        elif not request:
            raise EmptyRequestError()
        if self._taker is not None:
            self._taker.check_request(request)
        probe = [Message("user", as_text(request))]
        for model in self._small_models:
            check_fits(model, probe)
        return request

    def output_type_of(self, state: Mapping[str, Any]) -> type[BaseModel] | None:
        name = self.spec.output_skill or state.get("route")
        skill = self.spec.skills.get(name) if name else None
        return skill.output_type if skill is not None else None

    def result_of(self, thread_id: str, state: Mapping[str, Any], finished: bool = True) -> RunResult[OutT]:
        """The :class:`RunResult` of a run whose state is ``state``."""
        result = RunResult.from_state(
            state, thread_id=thread_id, prices=self.spec.prices, output_type=self.output_type_of(state),
            large=self.spec.models.get(self.spec.escalation.model),
        )
        if self.spec.shape is None and not state.get("status"):
            finished = False  # the routed graph's terminal nodes always set a status
        if not finished and result.status != "running":
            result.status = "running"
        return result  # type: ignore[return-value]

    # -- runs -----------------------------------------------------------------

    async def ainvoke(
        self, request: str | dict | BaseModel, *, thread_id: str | None = None, idempotency_key: str | None = None,
    ) -> RunResult[OutT]:
        """Run one request to the end and return its :class:`RunResult`.

        ``request`` is text, a dict, or the skill's input model. It is recorded
        as accepted before the graph starts, so a crash at any point leaves it
        for :meth:`arecover`. With ``idempotency_key``, a retry with the same key
        gets the same run and its result (waiting while it runs, resuming it if it
        ended without one) instead of a new run; the key is global to the
        checkpoint, so scope it (e.g. by user) yourself. Cancelling the call
        cancels the run: it is marked ``cancelled`` and never recovered.

        Raises:
            ThreadBusyError: another run holds ``thread_id`` (``on_busy="reject"``,
                or still busy after ``busy_timeout_s``).
            CheckpointError: the state could not be persisted; the run is marked
                failed and resumes with :meth:`aresume` once storage works again.
            SlmGraphError: any typed error of a failed run carries its
                ``thread_id`` and ``run_id``.
        """
        result: RunResult | None = None
        async for event in self.runner.events(request, thread_id, nodes=False, idempotency_key=idempotency_key):
            result = event.result
        assert result is not None
        return result

    async def astream(
        self, request: str | dict | BaseModel | None, *, thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[NodeEvent]:
        """Run one request, yielding a :class:`NodeEvent` as each node finishes.

        With ``request=None`` the run on ``thread_id`` resumes from its checkpoint.
        The last event is ``NodeEvent("end", result=...)``.
        """
        async for event in self.runner.events(request, thread_id, nodes=True, idempotency_key=idempotency_key):
            yield event

    async def aresume(self, thread_id: str) -> RunResult[OutT]:
        """Finish an interrupted or failed run from its last checkpoint; finished
        nodes are not re-run. On a finished run this returns its result unchanged."""
        return await self.ainvoke(None, thread_id=thread_id)  # type: ignore[arg-type]

    async def aget_result(self, thread_id: str) -> RunResult[OutT] | None:
        """The result as checkpointed for ``thread_id``, or ``None`` if unknown."""
        return await self.runner.aget_result(thread_id)

    async def apending_runs(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunRecord]:
        """Accepted runs that never finished because their process died, oldest first
        (with ``include_failed``, runs that raised too; with ``thread_prefix``, only
        the threads whose id starts with it)."""
        return await self.runner.apending_runs(include_failed=include_failed, thread_prefix=thread_prefix)

    async def arecover(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunResult]:
        """Finish every accepted run whose process died: from its last checkpoint, or
        from the start when it crashed before one. Call it at startup, before taking
        new requests. A run whose thread is held by a live run is left for later; a
        run that fails again stays ``failed`` in the runs table.

        Returns:
            The results of the runs finished now, oldest first.
        """
        return await self.runner.arecover(include_failed=include_failed, thread_prefix=thread_prefix)

    def invoke(
        self, request: str | dict | BaseModel, *, thread_id: str | None = None, idempotency_key: str | None = None,
    ) -> RunResult[OutT]:
        return run_sync(self.ainvoke(request, thread_id=thread_id, idempotency_key=idempotency_key))

    def stream(self, request: str | dict | BaseModel | None, *, thread_id: str | None = None) -> Iterator[NodeEvent]:
        return iterate_sync(self.astream(request, thread_id=thread_id))

    def resume(self, thread_id: str) -> RunResult[OutT]:
        return run_sync(self.aresume(thread_id))

    def get_result(self, thread_id: str) -> RunResult[OutT] | None:
        return run_sync(self.aget_result(thread_id))

    def pending_runs(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunRecord]:
        return run_sync(self.apending_runs(include_failed=include_failed, thread_prefix=thread_prefix))

    def recover(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunResult]:
        return run_sync(self.arecover(include_failed=include_failed, thread_prefix=thread_prefix))
