"""The durable-run runner: executes a graph's runs so that a crash loses nothing.

A :class:`Runner` is composed with a LangGraph ``StateGraph`` builder (an
:class:`~slmgraph.SLMGraph` holds one). A new request is recorded in the runs
table and, when its thread is free, takes the thread's lease in the same
transaction, all before the graph starts. The run then streams through LangGraph
with ``durability="sync"`` (each step's checkpoint is on disk before the next step
starts); its result is read back from the checkpoint, and the run is marked
``done`` and the thread released in one write. A typed error marks it ``failed``
(and carries ``thread_id`` and ``run_id``); a cancelled run (its caller went away)
is marked ``cancelled``, atomically with releasing its thread, and recovery never
starts it again; a dead process (or a shutdown) leaves it ``running`` for
:meth:`Runner.arecover`. Every store call is awaited off the event loop, and the
writes a cancellation must not cut short are shielded (``settle``).

A request with an ``idempotency_key`` maps to the run recorded under that key:
its result when done, a wait while it runs elsewhere, a resume (same run id,
finished nodes and effects kept) when it ended without a result.

What a run *means* (its reset, its status, its result) is the graph's: the runner
passes only ``{"request", "run_id"}`` in, so ``compile().ainvoke`` and LangGraph's
own server behave the same on a thread.

The runs store is opened by :class:`~._sessions.Sessions` (with the compiled graph)
and touched in three places only: :meth:`Runner._start` / :meth:`Runner._resume`
(recording and looking runs up) and :meth:`Runner.apending_runs`; leases and
effects go through ``_durable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from .._errors import CheckpointError, ConfigError, IdempotencyKeyReusedError, SlmGraphError, ThreadBusyError, UserError
from ._durable import GuardedSaver, OnBusy, ThreadLease, settle, settled
from ._result import RunResult
from ._runs import UNFINISHED, RunRecord, RunStore, new_id
from ._sessions import Sessions
from ._state import new_run

__all__ = ["NodeEvent", "Runner", "RunPolicy", "Checkpoint"]

log = logging.getLogger("slmgraph.runs")

Checkpoint = str | Path | BaseCheckpointSaver | None

#: ``result(thread_id, state, finished) -> RunResult``: how the graph reads its state.
ResultOf = Callable[[str, dict[str, Any], bool], RunResult]


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One streamed event: a node finished with ``update``; the last event has ``result``."""

    node: str
    update: dict[str, Any] = field(default_factory=dict)
    result: RunResult | None = None


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """How runs share a thread: see :func:`~slmgraph.build_graph`."""

    on_busy: OnBusy = "wait"
    busy_timeout_s: float = 300.0
    lease_ttl_s: float = 30.0

    def __post_init__(self) -> None:
        if self.on_busy not in ("wait", "reject"):
            raise ConfigError("on_busy", f"must be 'wait' or 'reject', got {self.on_busy!r}")
        if self.busy_timeout_s < 0 or self.lease_ttl_s <= 0:
            raise ConfigError("busy_timeout_s" if self.busy_timeout_s < 0 else "lease_ttl_s", "must be positive")


#: The key under which LangGraph's ``updates`` stream reports an interrupt.
INTERRUPT = "__interrupt__"

_NOT_ON_DISK = "the run ended but its final state is not in the checkpoint"


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def _durability(graph: CompiledStateGraph) -> dict[str, Any]:
    # "sync": each step's checkpoint is on disk before the next step starts, so a
    # SIGKILL never loses a finished node. (Only valid with a checkpointer.)
    return {"durability": "sync"} if graph.checkpointer is not None else {}


def _recorded(request: Any) -> str:
    """The request as the runs table stores it (text; structured input as JSON)."""
    if isinstance(request, str):
        return request
    return json.dumps(request, ensure_ascii=False, default=str)


def _annotate(exc: BaseException, thread_id: str | None, run_id: str | None) -> None:
    """Let a failed run's error say which run it was: slmgraph's errors carry
    ``thread_id`` and ``run_id``; an exception from the user's own code (a node, a
    check, a model) gets the same attributes and a note naming the run."""
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return
    if getattr(exc, "thread_id", None) and getattr(exc, "run_id", None):
        return
    try:
        if not getattr(exc, "thread_id", None):
            exc.thread_id = thread_id  # type: ignore[attr-defined]
        if not getattr(exc, "run_id", None):
            exc.run_id = run_id or None  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        return
    if not isinstance(exc, SlmGraphError):
        exc.add_note(
            f"slmgraph: raised in run {run_id or '-'} on thread {thread_id!r}; the run is recorded as failed "
            "and its checkpoint is kept (pending_runs(include_failed=True) lists it)"
        )


class Runner:
    """Runs a graph durably: records each request, holds its thread, checkpoints
    each step, and finishes what a crash left.

    Args:
        builder: the graph, not yet compiled.
        checkpoint: SQLite file path, a PostgreSQL DSN, a LangGraph checkpointer, or ``None``.
        name: the compiled graph's name.
        policy: thread sharing (wait or reject, timeouts, lease).
        result: turns a final state into the run's :class:`RunResult`.
        validate: checks (and may normalise) a request before it is recorded.
    """

    def __init__(
        self, builder: StateGraph, *, checkpoint: Checkpoint, name: str, policy: RunPolicy,
        result: ResultOf, validate: Callable[[Any], Any] = lambda r: r,
    ) -> None:
        self.builder, self.checkpoint, self.name, self.policy = builder, checkpoint, name, policy
        self.result_of, self.validate = result, validate
        #: Where each run's compiled graph and runs store come from.
        self.sessions = Sessions(builder, checkpoint, name)
        #: The PostgreSQL saver and runs store when ``checkpoint`` is a DSN.
        self.pg = self.sessions.pg

    # The wiring, under the names the batch job and tests open a session by.
    def _compiled(self) -> contextlib.AbstractAsyncContextManager[CompiledStateGraph]:
        return self.sessions.compiled()

    def _session(self) -> contextlib.AbstractAsyncContextManager[tuple[CompiledStateGraph, RunStore]]:
        return self.sessions.open()

    # -- runs -----------------------------------------------------------------

    async def events(
        self, request: Any, thread_id: str | None, *, nodes: bool, idempotency_key: str | None = None,
    ) -> AsyncIterator[NodeEvent]:
        """Start a run (or, with ``request=None``, resume ``thread_id``'s), yielding
        a :class:`NodeEvent` per finished node (with ``nodes``), then the result;
        with ``idempotency_key``, the run already recorded under it if any."""
        run_id: str | None = None
        try:
            if request is None:
                if thread_id is None:
                    raise UserError("resuming needs the thread id of the run")
                async for event in self._resume(thread_id, nodes=nodes):
                    yield event
                return
            request = self.validate(request)
            if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
                raise UserError("an idempotency key must be a non-empty string")
            thread_id = thread_id or new_id()
            run_id = new_id()
            async for event in self._start(request, thread_id, run_id, nodes, idempotency_key):
                yield event
        except BaseException as exc:
            _annotate(exc, thread_id, run_id)
            raise

    async def _start(
        self, request: Any, thread_id: str, run_id: str, nodes: bool, key: str | None,
    ) -> AsyncIterator[NodeEvent]:
        async with self._session() as (graph, store):
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.policy.lease_ttl_s)
            lease.keep_result = key is not None and graph.checkpointer is None
            # Recorded (and, if the thread is free, started) before the graph runs;
            # settled, so a cancellation cannot leave it half-known.
            text = _recorded(request)
            recorded = False  # our run is (or may be) in the table, and may hold the thread
            try:
                try:
                    if key is None:
                        first = await settled(store, store.begin(run_id, thread_id, text, self.policy.lease_ttl_s, lease.holder))
                    else:
                        first = await settled(store, store.accept(run_id, thread_id, text, idempotency_key=key))
                except asyncio.CancelledError:
                    recorded = True  # the write ended before the cancellation was re-raised: it may have landed
                    raise
                recorded = key is None or first is None
                if key is not None:
                    if first is not None:  # a retry: the run already recorded under the key
                        if first.request != text:  # type: ignore[union-attr]
                            raise IdempotencyKeyReusedError(first.run_id)  # type: ignore[union-attr]
                        async for event in self._follow(graph, store, first, nodes):  # type: ignore[arg-type]
                            yield event
                        return
                    first = ""
                await lease.acquire(self.policy.on_busy, self.policy.busy_timeout_s, new=True, holder=first)  # type: ignore[arg-type]
            except BaseException as exc:
                if recorded and not lease.released:
                    await _not_started(lease, exc)
                raise
            async with lease.held():
                async for event in self._drive(graph, lease, new_run(request, run_id), thread_id, run_id, nodes):
                    yield event

    async def _follow(
        self, graph: CompiledStateGraph, store: RunStore, run: RunRecord, nodes: bool,
    ) -> AsyncIterator[NodeEvent]:
        """The result of the run recorded under an idempotency key: its own when it
        is done; waited for while a live process runs it; else it is resumed as the
        same run (failed, cancelled or orphaned: finished nodes and effects kept)."""
        waited, delay = 0.0, 0.02
        while True:
            now = await store.get(run.run_id) or run
            if now.status == "done":
                yield NodeEvent(node="end", result=await self._result_of_run(graph, now))
                return
            if now.status in UNFINISHED and await store.owner_alive(now):
                if waited >= self.policy.busy_timeout_s:
                    raise ThreadBusyError(now.thread_id, now.run_id, waited_s=waited)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.25)
                continue
            if now.status not in (*UNFINISHED, "failed"):  # cancelled, rejected, superseded: retried now
                await settle(store.set_status(now.run_id, "failed", f"retried after it was {now.status}"))
            got = False
            async for event in self._resume(now.thread_id, now, nodes=nodes):
                got = got or event.result is not None
                yield event
            if got:
                return

    async def _result_of_run(self, graph: CompiledStateGraph, run: RunRecord) -> RunResult:
        """A finished run's result: from its final checkpoint (the thread may have
        moved on since), or as kept in the runs table by a graph without one."""
        if run.result is not None:
            return RunResult.model_validate_json(run.result)
        if graph.checkpointer is not None:
            config = _config(run.thread_id)
            async for snapshot in graph.aget_state_history(config):
                if snapshot.values.get("run_id") == run.run_id and not snapshot.next:
                    return self.result_of(run.thread_id, snapshot.values, True)
        raise CheckpointError(run.thread_id, f"run {run.run_id} is done but its final state is not in the checkpoint")

    async def _resume(self, thread_id: str, run: RunRecord | None = None, *, nodes: bool = True) -> AsyncIterator[NodeEvent]:
        async with self._session() as (graph, store):
            if graph.checkpointer is None:
                raise UserError("this graph has no checkpointer, so there is nothing to resume")
            run = run or await store.latest_open(thread_id)
            run_id = run.run_id if run is not None else new_id()
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.policy.lease_ttl_s)
            await lease.acquire(self.policy.on_busy, self.policy.busy_timeout_s)
            async with lease.held():
                if run is not None:
                    now = await store.get(run.run_id)
                    if now is None or now.status != "running":
                        return  # another process finished (or superseded) it meanwhile
                values = (await graph.aget_state(_config(thread_id))).values
                payload: dict[str, Any] | None
                if run is None:
                    if not values:
                        raise UserError(f"no run is checkpointed under thread id {thread_id!r}; nothing to resume")
                    payload = None
                    run_id = ""  # a run from before the runs table: resume it untracked
                elif values.get("run_id") == run.run_id:
                    payload = None  # continue from this run's last checkpoint
                else:
                    payload = new_run(run.request, run.run_id)  # crashed before its first checkpoint
                async for event in self._drive(graph, lease, payload, thread_id, run_id, nodes):
                    yield event

    async def _drive(
        self, graph: CompiledStateGraph, lease: ThreadLease, payload: dict[str, Any] | None,
        thread_id: str, run_id: str, nodes: bool,
    ) -> AsyncIterator[NodeEvent]:
        """Execute (or continue) one run and keep its row in the runs table true.

        Only what is on disk is reported. When the runs store shares the checkpoints'
        file, the final checkpoint (the last one the guarded saver wrote for the
        thread, by id) is confirmed to be the thread's newest on disk in the very
        transaction that marks the run done; otherwise the final state is read back
        from the saver. The ``updates`` stream is always read, as LangGraph's own
        ``ainvoke`` reads it, so an interrupt is never taken for an ending."""
        config = _config(thread_id)
        state: dict[str, Any] = {}
        saver = graph.checkpointer
        confirm = bool(run_id) and isinstance(saver, GuardedSaver) and lease.store.confirms_checkpoints
        checkpoint_id: str | None = None
        if confirm:
            saver.watch(thread_id)  # type: ignore[union-attr]
        try:
            interrupted = False
            async for mode, data in graph.astream(payload, config, stream_mode=["updates", "values"], **_durability(graph)):
                if lease.lost:
                    raise ThreadBusyError(thread_id, "(lease expired and taken over)")
                if mode == "values":
                    state = data
                    continue
                if INTERRUPT in data:
                    interrupted = True
                    continue
                if nodes:
                    for node, update in data.items():
                        yield NodeEvent(node=node, update=dict(update or {}))
            if confirm:
                checkpoint_id = saver.newest(thread_id)  # type: ignore[union-attr]
            if checkpoint_id is None and saver is not None:
                # Nothing written by this drive (a resumed run that had already
                # reached its final checkpoint), or a store that cannot confirm:
                # read the final state back.
                snapshot = await graph.aget_state(config)
                state, interrupted = snapshot.values, interrupted or bool(snapshot.next)
                if confirm:
                    checkpoint_id = (snapshot.config or {}).get("configurable", {}).get("checkpoint_id")
            if saver is not None and ((run_id and state.get("run_id") != run_id) or interrupted):
                raise CheckpointError(thread_id, _NOT_ON_DISK)
        except BaseException as exc:
            if confirm:
                saver.newest(thread_id)  # type: ignore[union-attr]
            _annotate(exc, thread_id, run_id)
            if run_id:  # failed, cancelled (the caller went away) or, at shutdown, left recoverable
                await lease.end(exc)
            raise
        result = self.result_of(thread_id, state, True)
        if run_id:
            kept = result.model_dump_json() if lease.keep_result else None
            if not await lease.finish("done", result=kept, checkpoint_id=checkpoint_id):
                lost = CheckpointError(thread_id, _NOT_ON_DISK)
                _annotate(lost, thread_id, run_id)
                await lease.end(lost)
                raise lost
        yield NodeEvent(node="end", result=result)

    async def aget_result(self, thread_id: str) -> RunResult | None:
        """The result as checkpointed for ``thread_id``, or ``None`` if unknown."""
        async with self._compiled() as graph:
            if graph.checkpointer is None:
                return None
            snapshot = await graph.aget_state(_config(thread_id))
        return self.result_of(thread_id, snapshot.values, not snapshot.next) if snapshot.values else None

    async def apending_runs(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunRecord]:
        async with self._session() as (_, store):
            runs = await store.orphaned(include_failed=include_failed)
        return [r for r in runs if r.thread_id.startswith(thread_prefix)]

    async def arecover(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunResult]:
        """Finish every accepted run whose process died (see :meth:`SLMGraph.arecover`)."""
        results = []
        for run in await self.apending_runs(include_failed=include_failed, thread_prefix=thread_prefix):
            try:
                async for event in self._resume(run.thread_id, run, nodes=False):
                    if event.result is not None:
                        results.append(event.result)
            except ThreadBusyError:
                log.info("run %s: thread %s is busy with a live run; left for later", run.run_id, run.thread_id)
            except SlmGraphError as exc:
                log.warning("run %s on thread %s failed again: %s", run.run_id, run.thread_id, exc)
        return results


async def _not_started(lease: ThreadLease, exc: BaseException) -> None:
    """Record a run that ended before its graph started: rejected (its thread was
    busy), cancelled (its caller went away) or failed."""
    if isinstance(exc, ThreadBusyError):
        try:
            await lease.finish("rejected", str(exc))
        except Exception as also:
            log.error("run %s was rejected and could not be recorded: %s", lease.run_id, also)
    else:
        await lease.end(exc)


def as_input(request: Any) -> Any:
    """A request as the graph's state holds it: text, or structured input as JSON."""
    if isinstance(request, BaseModel):
        return request.model_dump(mode="json")
    return request
