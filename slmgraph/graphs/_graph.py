"""Building and running a routed graph: router -> specialist -> accept -> end, or -> escalation -> end."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from .._context import check_fits
from .._errors import ConfigError, EmptyRequestError, UnknownSkillError
from .._sync import iterate_sync, run_sync
from ..agents._escalation import EscalationAgent
from ..agents._router import ModelRouter, Router, RulesRouter, model_keys_of
from ..ledger import LedgerEntry, PriceTable, totals
from ..models._base import Message, Model
from ..skills._skill import Skill
from ._durable import GuardedSaver, OnBusy, setup_saver
from ._nodes import GraphSpec, Nodes, outcome_message
from ._runner import NodeEvent, RunsMixin
from ._runs import RunStore
from ._state import GraphState, RunResult

__all__ = ["SLMGraph", "NodeEvent", "build_graph", "DEFAULT_CHECKPOINT"]

#: Where runs are checkpointed unless told otherwise.
DEFAULT_CHECKPOINT = Path(".slmgraph") / "checkpoints.sqlite"

Checkpoint = str | Path | BaseCheckpointSaver | None


def build_graph(
    skills: Sequence[Skill],
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
) -> SLMGraph:
    """Compose skills into a routed graph.

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
    if on_busy not in ("wait", "reject"):
        raise ConfigError("on_busy", f"must be 'wait' or 'reject', got {on_busy!r}")
    if busy_timeout_s < 0 or lease_ttl_s <= 0:
        raise ConfigError("busy_timeout_s" if busy_timeout_s < 0 else "lease_ttl_s", "must be positive")
    if not 0.0 <= route_threshold <= 1.0:
        raise ConfigError("route_threshold", f"must be between 0 and 1, got {route_threshold}")
    if router is None:
        router = RulesRouter([], default=skills[0].name) if len(skills) == 1 else ModelRouter()
    for n in router.skill_names():
        if n not in by_name:
            raise UnknownSkillError(n, list(by_name))
    escalation = escalation or EscalationAgent()
    for n in escalation.tools or ():
        if n not in by_name:
            raise UnknownSkillError(n, list(by_name))
    needed = {s.model for s in skills} | model_keys_of(router)
    for key in sorted(needed):
        if key not in models:
            raise ConfigError(f"models.{key}", f"no model is bound to {key!r}; bind one with models={{{key!r}: ...}}")
    spec = GraphSpec(
        skills=by_name,
        models=dict(models),
        router=router,
        escalation=escalation,
        route_threshold=route_threshold,
        prices=prices or PriceTable(),
        large_keys=frozenset(large_keys),
        on_busy=on_busy,
        busy_timeout_s=busy_timeout_s,
        lease_ttl_s=lease_ttl_s,
    )
    return SLMGraph(spec, checkpoint=checkpoint, name=name)


class SLMGraph(RunsMixin):
    """A compiled routed graph with an async API, thin sync wrappers and durable runs.

    Every accepted request is recorded in a runs table (in the checkpoint's SQLite
    file) before the graph starts; :meth:`arecover` finishes the runs a crash left.
    One run at a time holds a thread. See docs/durability.md.

    Use :meth:`compile` to get the plain LangGraph graph for LangGraph tooling.
    """

    def __init__(self, spec: GraphSpec, *, checkpoint: Checkpoint, name: str) -> None:
        self.spec = spec
        self.name = name
        self.checkpoint = checkpoint
        # Composite skills (with a runner) chunk or batch their own calls, so the
        # request is only checked against the models that take it whole.
        keys = {s.model for s in spec.skills.values() if s.runner is None} | model_keys_of(spec.router)
        self._small_models = [spec.models[k] for k in sorted(keys)]
        nodes = self._nodes = Nodes(spec)
        self._store: RunStore | None = None
        from ..storage._pg import is_postgres  # a DSN: the shared PostgreSQL store

        if is_postgres(checkpoint):
            from ..storage._postgres import PostgresStore

            self._pg: PostgresStore | None = PostgresStore(str(checkpoint))
        else:
            self._pg = None
        builder = StateGraph(GraphState)
        builder.add_node("router", nodes.router)
        builder.add_node("specialist", nodes.specialist)
        builder.add_node("escalation", nodes.escalation)
        builder.add_edge(START, "router")
        builder.add_conditional_edges("router", Nodes.after_router, ["specialist", "escalation"])
        builder.add_conditional_edges("specialist", Nodes.after_specialist, {"end": END, "escalation": "escalation"})
        builder.add_edge("escalation", END)
        self.builder = builder
        self._plain = builder.compile(name=name) if checkpoint is None else None
        if isinstance(checkpoint, BaseCheckpointSaver):
            self._plain = builder.compile(checkpointer=GuardedSaver(checkpoint), name=name)

    @property
    def skills(self) -> Mapping[str, Skill]:
        return self.spec.skills

    def compile(self, checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
        """The underlying LangGraph graph, compiled with ``checkpointer``."""
        return self.builder.compile(checkpointer=checkpointer, name=self.name)

    @contextlib.asynccontextmanager
    async def _compiled(self) -> AsyncIterator[CompiledStateGraph]:
        if self._plain is not None:
            yield self._plain
            return
        if self._pg is not None:
            async with self._pg.session() as saver:
                yield self.builder.compile(checkpointer=GuardedSaver(saver), name=self.name)
            return
        path = Path(self.checkpoint)
        async with contextlib.AsyncExitStack() as stack:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Probe synchronously first: a failed aiosqlite connect leaves a worker
                # thread that later reports into a closed event loop.
                sqlite3.connect(path).close()
                saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
                await setup_saver(saver)
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    "checkpoint", f"cannot open the SQLite checkpoint file {str(path)!r} ({exc}); "
                    "choose a writable path, or checkpoint=None to run without persistence"
                ) from None
            yield self.builder.compile(checkpointer=GuardedSaver(saver), name=self.name)

    def validate_request(self, request: str) -> str:
        """Refuse an empty request, or one that cannot fit a small model's context.

        Raises:
            EmptyRequestError, RequestTooLargeError.
        """
        if not isinstance(request, str) or not request.strip():
            raise EmptyRequestError()
        probe = [Message("user", request)]
        for model in self._small_models:
            check_fits(model, probe)
        return request

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}}

    async def ainvoke(
        self, request: str, *, thread_id: str | None = None, idempotency_key: str | None = None,
    ) -> RunResult:
        """Run one request to the end and return its :class:`RunResult`.

        The request is recorded as accepted before the graph starts, so a crash at
        any point leaves it for :meth:`arecover`. With ``idempotency_key``, a retry
        with the same key gets the same run and its result (waiting for it while it
        runs, resuming it if it ended without a result) instead of a new run; the
        key is global to the checkpoint, so scope it (e.g. by user) yourself.
        Cancelling the call cancels the run: it is marked ``cancelled``.

        Raises:
            ThreadBusyError: another run holds ``thread_id`` (``on_busy="reject"``,
                or still busy after ``busy_timeout_s``).
            CheckpointError: the state could not be persisted; the run is marked
                failed and resumes with :meth:`aresume` once storage works again.
        """
        result: RunResult | None = None
        async for event in self._events(request, thread_id, nodes=False, idempotency_key=idempotency_key):
            result = event.result
        assert result is not None
        return result

    async def astream(
        self, request: str | None, *, thread_id: str | None = None, idempotency_key: str | None = None,
    ) -> AsyncIterator[NodeEvent]:
        """Run one request, yielding a :class:`NodeEvent` as each node finishes.

        With ``request=None`` the run on ``thread_id`` resumes from its checkpoint.
        The last event is ``NodeEvent("end", result=...)``.
        """
        async for event in self._events(request, thread_id, nodes=True, idempotency_key=idempotency_key):
            yield event


    async def aresume(self, thread_id: str) -> RunResult:
        """Finish an interrupted or failed run from its last checkpoint; finished
        nodes are not re-run. On a finished run this returns its result unchanged."""
        return await self.ainvoke(None, thread_id=thread_id)  # type: ignore[arg-type]

    async def aget_result(self, thread_id: str) -> RunResult | None:
        """The result as checkpointed for ``thread_id``, or ``None`` if unknown."""
        async with self._compiled() as graph:
            if graph.checkpointer is None:
                return None
            snapshot = await graph.aget_state(self._config(thread_id))
        return self._result(thread_id, snapshot.values) if snapshot.values else None

    def invoke(self, request: str, *, thread_id: str | None = None, idempotency_key: str | None = None) -> RunResult:
        return run_sync(self.ainvoke(request, thread_id=thread_id, idempotency_key=idempotency_key))

    def stream(self, request: str | None, *, thread_id: str | None = None) -> Iterator[NodeEvent]:
        return iterate_sync(self.astream(request, thread_id=thread_id))

    def resume(self, thread_id: str) -> RunResult:
        return run_sync(self.aresume(thread_id))

    def get_result(self, thread_id: str) -> RunResult | None:
        return run_sync(self.aget_result(thread_id))

    def _result(self, thread_id: str, state: GraphState) -> RunResult:
        # Entries come from slmgraph's own Recorder, already well-formed.
        entries = [LedgerEntry.model_construct(**e) for e in state.get("ledger", [])]
        status = state.get("status", "running")
        # Built from slmgraph's own state, so it skips re-validation.
        return RunResult.model_construct(
            thread_id=thread_id,
            status=status,
            route=state.get("route"),
            route_confidence=state.get("route_confidence"),
            answer=state.get("answer"),
            output=state.get("output"),
            confidence=state.get("confidence"),
            draft=state.get("draft"),
            escalation_reason=state.get("escalation_reason"),
            escalation_detail=state.get("escalation_detail"),
            tool_calls=state.get("tool_calls", []),
            message=outcome_message(state),
            ledger=entries,
            totals=totals(entries, self.spec.prices),
            run_id=state.get("run_id") or None,
            error=state.get("error"),
        )
