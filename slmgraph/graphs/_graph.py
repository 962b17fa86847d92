"""Building and running a routed graph: router -> specialist -> accept -> end, or -> escalation -> end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from .._context import check_fits
from .._errors import (
    CheckpointError, ConfigError, EmptyRequestError, SlmGraphError, ThreadBusyError, UnknownSkillError, UserError,
)
from .._sync import iterate_sync, run_sync
from ..agents._escalation import EscalationAgent
from ..agents._router import ModelRouter, Router, RulesRouter, model_keys_of
from ..ledger import LedgerEntry, PriceTable, totals
from ..models._base import Message, Model
from ..skills._skill import Skill
from ._durable import GuardedSaver, OnBusy, ThreadLease, sqlite_file_of
from ._nodes import GraphSpec, Nodes, outcome_message
from ._runs import MemoryRunStore, RunRecord, RunStore
from ._state import GraphState, RunResult, new_run

log = logging.getLogger("slmgraph.runs")

__all__ = ["SLMGraph", "NodeEvent", "build_graph", "DEFAULT_CHECKPOINT"]

#: Where runs are checkpointed unless told otherwise.
DEFAULT_CHECKPOINT = Path(".slmgraph") / "checkpoints.sqlite"

Checkpoint = str | Path | BaseCheckpointSaver | None


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One streamed event: a node finished with ``update``; the last event has ``result``."""

    node: str
    update: dict[str, Any] = field(default_factory=dict)
    result: RunResult | None = None


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
            LangGraph checkpointer, or ``None`` for no persistence.
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


def _durability(graph: CompiledStateGraph) -> dict[str, Any]:
    # "sync": each step's checkpoint is on disk before the next step starts, so a
    # SIGKILL never loses a finished node. (Only valid with a checkpointer.)
    return {"durability": "sync"} if graph.checkpointer is not None else {}


class SLMGraph:
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
        path = Path(self.checkpoint)
        async with contextlib.AsyncExitStack() as stack:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Probe synchronously first: a failed aiosqlite connect leaves a worker
                # thread that later reports into a closed event loop.
                sqlite3.connect(path).close()
                saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
                await saver.setup()
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

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[CompiledStateGraph, RunStore]]:
        """The compiled graph and the runs store in the same SQLite file."""
        async with self._compiled() as graph:
            if self._store is None:
                path: Path | None = None
                if isinstance(self.checkpoint, (str, Path)):
                    path = Path(self.checkpoint)
                elif isinstance(self.checkpoint, BaseCheckpointSaver):
                    path = await sqlite_file_of(self.checkpoint)
                self._store = RunStore(path) if path is not None else MemoryRunStore()
                self._nodes.store = self._store
            yield graph, self._store

    async def ainvoke(self, request: str, *, thread_id: str | None = None) -> RunResult:
        """Run one request to the end and return its :class:`RunResult`.

        The request is recorded as accepted before the graph starts, so a crash at
        any point leaves it for :meth:`arecover`.

        Raises:
            ThreadBusyError: another run holds ``thread_id`` (``on_busy="reject"``,
                or still busy after ``busy_timeout_s``).
            CheckpointError: the state could not be persisted; the run is marked
                failed and resumes with :meth:`aresume` once storage works again.
        """
        result: RunResult | None = None
        async for event in self._events(request, thread_id, nodes=False):
            result = event.result
        assert result is not None
        return result

    async def astream(self, request: str | None, *, thread_id: str | None = None) -> AsyncIterator[NodeEvent]:
        """Run one request, yielding a :class:`NodeEvent` as each node finishes.

        With ``request=None`` the run on ``thread_id`` resumes from its checkpoint.
        The last event is ``NodeEvent("end", result=...)``.
        """
        async for event in self._events(request, thread_id, nodes=True):
            yield event

    async def _events(self, request: str | None, thread_id: str | None, *, nodes: bool) -> AsyncIterator[NodeEvent]:
        if request is None:
            if thread_id is None:
                raise UserError("resuming needs the thread id of the run")
            async for event in self._resume(thread_id, nodes=nodes):
                yield event
            return
        self.validate_request(request)
        thread_id = thread_id or uuid.uuid4().hex
        run_id = uuid.uuid4().hex
        async with self._session() as (graph, store):
            # Recorded (and, if the thread is free, started) before the graph runs.
            holder = await store.call(store.begin, run_id, thread_id, request, self.spec.lease_ttl_s)
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.spec.lease_ttl_s)
            try:
                await lease.acquire(self.spec.on_busy, self.spec.busy_timeout_s, new=True, holder=holder)
            except ThreadBusyError as exc:
                store.set_status(run_id, "rejected", str(exc))
                raise
            async with lease.held():
                payload = new_run(request, run_id)
                async for event in self._drive(graph, store, lease, payload, thread_id, run_id, nodes):
                    yield event

    async def _resume(
        self, thread_id: str, run: RunRecord | None = None, *, nodes: bool = True,
    ) -> AsyncIterator[NodeEvent]:
        async with self._session() as (graph, store):
            if graph.checkpointer is None:
                raise UserError("this graph has no checkpointer, so there is nothing to resume")
            run = run or await store.call(store.latest_open, thread_id)
            run_id = run.run_id if run is not None else uuid.uuid4().hex
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.spec.lease_ttl_s)
            await lease.acquire(self.spec.on_busy, self.spec.busy_timeout_s)
            async with lease.held():
                config = self._config(thread_id)
                values = (await graph.aget_state(config)).values
                if run is None:
                    if not values:
                        raise UserError(f"no run is checkpointed under thread id {thread_id!r}; nothing to resume")
                    payload: GraphState | None = None
                    run_id = ""  # a run from before the runs table: resume it untracked
                elif values.get("run_id") == run.run_id:
                    payload = None  # continue from this run's last checkpoint
                else:
                    payload = new_run(run.request, run.run_id)  # crashed before its first checkpoint
                async for event in self._drive(graph, store, lease, payload, thread_id, run_id, nodes):
                    yield event

    async def _drive(
        self, graph: CompiledStateGraph, store: RunStore, lease: ThreadLease,
        payload: GraphState | None, thread_id: str, run_id: str, nodes: bool,
    ) -> AsyncIterator[NodeEvent]:
        """Execute (or continue) one run and keep its row in the runs table true;
        yields a NodeEvent per finished node (with ``nodes``), then the result."""
        config = self._config(thread_id)
        state: GraphState = {}
        try:
            modes = ["updates", "values"] if nodes else ["values"]
            async for mode, data in graph.astream(payload, config, stream_mode=modes, **_durability(graph)):
                if lease.lost:
                    raise ThreadBusyError(thread_id, "(lease expired and taken over)")
                if mode == "values":
                    state = data
                    continue
                for node, update in data.items():
                    yield NodeEvent(node=node, update=dict(update or {}))
            if graph.checkpointer is not None:
                # Report only what is on disk: the result is read back from the checkpoint.
                state = (await graph.aget_state(config)).values
                if (run_id and state.get("run_id") != run_id) or state.get("status", "running") == "running":
                    raise CheckpointError(thread_id, "the run ended but its final state is not in the checkpoint")
        except BaseException as exc:
            if run_id:
                # Synchronous: this also runs while the task is being cancelled.
                lease.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        if run_id:
            await lease.afinish("done")
        yield NodeEvent(node="end", result=self._result(thread_id, state))

    def pending_runs(self, *, include_failed: bool = False) -> list[RunRecord]:
        """Accepted runs that never finished because their process died, oldest first
        (with ``include_failed``, runs that raised too)."""
        return run_sync(self.apending_runs(include_failed=include_failed))

    async def apending_runs(self, *, include_failed: bool = False) -> list[RunRecord]:
        async with self._session() as (_, store):
            return await store.call(store.orphaned, include_failed=include_failed)

    async def arecover(self, *, include_failed: bool = False) -> list[RunResult]:
        """Finish every accepted run whose process died: from its last checkpoint, or
        from the start when it crashed before one. Call it at startup, before taking
        new requests. A run whose thread is held by a live run is left for later; a
        run that fails again stays ``failed`` in the runs table.

        Returns:
            The results of the runs finished now, oldest first.
        """
        results = []
        for run in await self.apending_runs(include_failed=include_failed):
            try:
                async for event in self._resume(run.thread_id, run, nodes=False):
                    if event.result is not None:
                        results.append(event.result)
            except ThreadBusyError:
                log.info("run %s: thread %s is busy with a live run; left for later", run.run_id, run.thread_id)
            except SlmGraphError as exc:
                log.warning("run %s on thread %s failed again: %s", run.run_id, run.thread_id, exc)
        return results

    def recover(self, *, include_failed: bool = False) -> list[RunResult]:
        return run_sync(self.arecover(include_failed=include_failed))

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

    def invoke(self, request: str, *, thread_id: str | None = None) -> RunResult:
        return run_sync(self.ainvoke(request, thread_id=thread_id))

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
