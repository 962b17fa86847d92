"""How an :class:`~slmgraph.SLMGraph` executes a run durably.

A new request is recorded in the runs table and, when its thread is free, takes
the thread's lease in the same transaction, all before the graph starts. The run
then streams through LangGraph with ``durability="sync"`` (each step's checkpoint
is on disk before the next step starts); its result is read back from the
checkpoint, and the run is marked ``done`` and the thread released in one write.
A typed error marks it ``failed``; a cancelled run (its caller went away) is
marked ``cancelled``, atomically with releasing its thread, and recovery never
starts it again; a dead process (or a shutdown) leaves it ``running`` for
:meth:`RunsMixin.arecover`. Every store write is awaited off the event loop, and
the ones a cancellation must not cut short are shielded (``settle``).

A request with an ``idempotency_key`` maps to the run recorded under that key:
its stored result when done, a wait while it runs elsewhere, a resume (same run
id, finished nodes and effects kept) when it ended without a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from .._errors import CheckpointError, SlmGraphError, ThreadBusyError, UserError
from .._sync import run_sync
from ._durable import ThreadLease, settle, sqlite_file_of
from ._runs import UNFINISHED, RunRecord, RunStore
from ._runs_memory import MemoryRunStore
from ._runs_sqlite import SqliteRunStore
from ._state import GraphState, RunResult, new_run

__all__ = ["NodeEvent", "RunsMixin"]

log = logging.getLogger("slmgraph.runs")


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One streamed event: a node finished with ``update``; the last event has ``result``."""

    node: str
    update: dict[str, Any] = field(default_factory=dict)
    result: RunResult | None = None


def _durability(graph: CompiledStateGraph) -> dict[str, Any]:
    # "sync": each step's checkpoint is on disk before the next step starts, so a
    # SIGKILL never loses a finished node. (Only valid with a checkpointer.)
    return {"durability": "sync"} if graph.checkpointer is not None else {}


class RunsMixin:
    """The durable-run half of :class:`~slmgraph.SLMGraph`: starting, resuming and
    recovering runs. It relies on the graph's ``spec``, ``checkpoint``, ``_nodes``,
    ``_store``, ``_compiled()``, ``_config()``, ``validate_request()`` and ``_result()``."""

    spec: Any
    checkpoint: Any
    _nodes: Any
    _store: RunStore | None
    _pg: Any

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[CompiledStateGraph, RunStore]]:
        """The compiled graph and the runs store in the same SQLite file.

        The store's connection closes with the last open session, so that, as
        before, closing the graph's connections folds the WAL back into the file."""
        try:
            async with self._compiled() as graph:
                if self._store is None:
                    from ..storage._postgres import postgres_store_of

                    path: Path | None = None
                    shared: RunStore | None = None
                    if self._pg is not None:  # a PostgreSQL DSN
                        shared = self._pg.store
                    elif isinstance(self.checkpoint, (str, Path)):
                        path = Path(self.checkpoint)
                    elif isinstance(self.checkpoint, BaseCheckpointSaver):
                        shared = postgres_store_of(self.checkpoint)
                        path = None if shared else await sqlite_file_of(self.checkpoint)
                    self._store = shared or (SqliteRunStore(path) if path is not None else MemoryRunStore())
                    self._nodes.store = self._store
                self._store.sessions += 1
                try:
                    yield graph, self._store
                finally:
                    self._store.sessions -= 1
        finally:
            if self._store is not None and self._store.durable and self._store.sessions == 0:
                await settle(self._store.close())


    async def _events(
        self, request: str | None, thread_id: str | None, *, nodes: bool, idempotency_key: str | None = None,
    ) -> AsyncIterator[NodeEvent]:
        if request is None:
            if thread_id is None:
                raise UserError("resuming needs the thread id of the run")
            async for event in self._resume(thread_id, nodes=nodes):
                yield event
            return
        self.validate_request(request)
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
            raise UserError("an idempotency key must be a non-empty string")
        thread_id = thread_id or uuid.uuid4().hex
        run_id = uuid.uuid4().hex
        async with self._session() as (graph, store):
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.spec.lease_ttl_s)
            lease.keep_result = idempotency_key is not None
            # Recorded (and, if the thread is free, started) before the graph runs;
            # shielded, so a cancellation cannot leave it half-known.
            if idempotency_key is None:
                record = asyncio.ensure_future(
                    store.begin(run_id, thread_id, request, self.spec.lease_ttl_s, lease.holder))
            else:
                record = asyncio.ensure_future(store.accept(run_id, thread_id, request, idempotency_key=idempotency_key))
            try:
                first = await settle(record)
                if idempotency_key is not None:
                    if first is not None:  # a retry: follow the run already recorded under the key
                        existing: RunRecord = first  # type: ignore[assignment]
                        async for event in self._follow(store, existing, nodes):
                            yield event
                        return
                    first = ""
                await lease.acquire(self.spec.on_busy, self.spec.busy_timeout_s, new=True, holder=first)  # type: ignore[arg-type]
            except BaseException as exc:
                if record.done() and not record.cancelled() and record.exception() is None and not lease.released:
                    if record.result() is None or idempotency_key is None:  # this request recorded a run
                        await self._not_started(lease, exc)
                raise
            async with lease.held():
                payload = new_run(request, run_id)
                async for event in self._drive(graph, store, lease, payload, thread_id, run_id, nodes):
                    yield event

    @staticmethod
    async def _not_started(lease: ThreadLease, exc: BaseException) -> None:
        """Record a run that ended before its graph started: rejected (thread busy),
        cancelled (its caller went away) or failed."""
        if isinstance(exc, ThreadBusyError):
            try:
                await lease.finish("rejected", str(exc))
            except Exception as also:
                log.error("run %s was rejected and could not be recorded: %s", lease.run_id, also)
        else:
            await lease.end(exc)

    async def _follow(self, store: RunStore, run: RunRecord, nodes: bool) -> AsyncIterator[NodeEvent]:
        """The result of the run recorded under an idempotency key: stored when it is
        done; waited for while a live process runs it; else it is resumed as the
        same run (failed, cancelled or orphaned: finished nodes and effects kept)."""
        waited, delay = 0.0, 0.02
        while True:
            now = await store.get(run.run_id) or run
            if now.status == "done":
                if now.result is not None:
                    yield NodeEvent(node="end", result=RunResult.model_validate_json(now.result))
                    return
                raise CheckpointError(now.thread_id, f"run {now.run_id} is done but its result was not kept")
            if now.status in UNFINISHED and await store.owner_alive(now):
                if waited >= self.spec.busy_timeout_s:
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

    async def _resume(
        self, thread_id: str, run: RunRecord | None = None, *, nodes: bool = True,
    ) -> AsyncIterator[NodeEvent]:
        async with self._session() as (graph, store):
            if graph.checkpointer is None:
                raise UserError("this graph has no checkpointer, so there is nothing to resume")
            run = run or await store.latest_open(thread_id)
            run_id = run.run_id if run is not None else uuid.uuid4().hex
            lease = ThreadLease(store, thread_id, run_id, ttl_s=self.spec.lease_ttl_s)
            lease.keep_result = run is not None and run.idempotency_key is not None
            await lease.acquire(self.spec.on_busy, self.spec.busy_timeout_s)
            async with lease.held():
                if run is not None:
                    now = await store.get(run.run_id)
                    if now is None or now.status != "running":
                        return  # another process finished (or superseded) it meanwhile
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
            if run_id:  # failed, cancelled (the caller went away) or, at shutdown, left recoverable
                await lease.end(exc)
            raise
        result = self._result(thread_id, state)
        if run_id:
            await lease.finish("done", result=result.model_dump_json() if lease.keep_result else None)
        yield NodeEvent(node="end", result=result)

    def pending_runs(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunRecord]:
        """Accepted runs that never finished because their process died, oldest first
        (with ``include_failed``, runs that raised too; with ``thread_prefix``, only
        the threads whose id starts with it)."""
        return run_sync(self.apending_runs(include_failed=include_failed, thread_prefix=thread_prefix))

    async def apending_runs(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunRecord]:
        async with self._session() as (_, store):
            runs = await store.orphaned(include_failed=include_failed)
        return [r for r in runs if r.thread_id.startswith(thread_prefix)]

    async def arecover(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunResult]:
        """Finish every accepted run whose process died: from its last checkpoint, or
        from the start when it crashed before one. Call it at startup, before taking
        new requests. A run whose thread is held by a live run is left for later; a
        run that fails again stays ``failed`` in the runs table.

        Returns:
            The results of the runs finished now, oldest first.
        """
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

    def recover(self, *, include_failed: bool = False, thread_prefix: str = "") -> list[RunResult]:
        return run_sync(self.arecover(include_failed=include_failed, thread_prefix=thread_prefix))
