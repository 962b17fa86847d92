"""Running served graphs: shared checkpointers, the concurrency limit, cancellation.

Protocol-agnostic: the OpenAI and Ollama routes both call :class:`GraphHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from .._errors import ConfigError
from .._starting import StartGate
from ..graphs._graph import NodeEvent, SLMGraph
from ..graphs._state import RunResult
from ._failures import Failure, ServerBusy, UnknownModel, failure_of, is_storage_fault

log = logging.getLogger("slmgraph.serve")

__all__ = ["GraphHost", "ServerBusy", "UnknownModel", "Failure", "failure_of", "is_storage_fault", "extension",
           "content_of", "Ticket", "prepare_models"]


def content_of(result: RunResult) -> str:
    """The assistant message for a run: its answer, or what happened and the draft."""
    if result.answer is not None:
        return result.answer
    text = result.message
    if result.draft is not None:
        text += "\n\ndraft: " + json.dumps(result.draft, ensure_ascii=False, default=str)
    return text


def extension(result: RunResult, conversation_id: str | None) -> dict[str, Any]:
    """The ``slmgraph`` extension field: route, escalation, cost, thread."""
    t = result.totals
    return {
        "thread_id": result.thread_id,
        "conversation_id": conversation_id,
        "status": result.status,
        "route": result.route,
        "route_confidence": result.route_confidence,
        "confidence": result.confidence,
        "escalation_reason": result.escalation_reason,
        "escalation_detail": result.escalation_detail,
        "message": result.message,
        "output": result.output_json,
        "draft": result.draft,
        "totals": t.model_dump(),
        "cost_usd": t.cost_usd,
    }


class Ticket:
    """A request's place in the limiter, taken when it is admitted. It counts as
    waiting until the run gets a slot; :meth:`release` gives the place back if the
    run never starts (the client left first). Releasing twice, or after the run
    took its slot, is harmless."""

    __slots__ = ("_limiter", "state")

    def __init__(self, limiter: _Limiter) -> None:
        self._limiter = limiter
        self.state = "waiting"  # -> "running" -> "done"; or "waiting" -> "done"

    def release(self) -> None:
        """Give back a place that never became a running slot (a running slot is
        given back by the run itself)."""
        if self.state == "waiting":
            self._limiter.waiting -= 1
            self.state = "done"


class _Limiter:
    """At most ``limit`` runs at once; up to ``max_queue`` more wait in FIFO order.

    A request is counted when it is admitted (:meth:`admit`), before its response
    starts, so streaming requests whose runs begin later count too. A run with its
    slot also passes the start gate (at most ``max_starting`` in set-up at once; by
    default ``limit``, which never holds anyone back).
    """

    def __init__(self, limit: int, max_queue: int, max_starting: int | None = None) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.gate = StartGate(max_starting or limit)
        self.active = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    def sem(self) -> asyncio.Semaphore:
        if self._sem is None:  # created on the serving loop
            self._sem = asyncio.Semaphore(self.limit)
        return self._sem

    def admit(self) -> Ticket:
        """A place for one more request, or :class:`ServerBusy` when the slots and
        the queue are full."""
        if self.active + self.waiting >= self.limit + self.max_queue:
            raise ServerBusy()
        self.waiting += 1
        return Ticket(self)

    @contextlib.asynccontextmanager
    async def slot(self, ticket: Ticket) -> AsyncIterator[None]:
        if ticket.state != "waiting":
            raise RuntimeError("a limiter ticket is used once")
        try:
            await self.sem().acquire()
        except BaseException:
            ticket.release()
            raise
        self.waiting -= 1
        self.active += 1
        ticket.state = "running"
        try:
            async with self.gate.starting():
                yield
        finally:
            self.active -= 1
            ticket.state = "done"
            self.sem().release()


_END = object()


async def prepare_models(graphs: Iterable[SLMGraph]) -> None:
    """Ready each model of ``graphs`` for its first call (``Model.aprepare``: its
    client library imported, this loop's client made), sending nothing.

    A server does this before it accepts requests: otherwise the first request of
    each process pays for it (about 0.15 s of CPU with the Ollama client, most of it
    importing the library and loading the TLS certificates of its two clients),
    and a burst reaching several fresh processes at once pays it in all of them
    together, on the same cores. A model that cannot get ready is logged and
    left to its first call, which reports the problem to that request."""
    seen: set[int] = set()
    for g in graphs:
        for key, model in g.spec.models.items():
            if id(model) in seen:
                continue
            seen.add(id(model))
            try:
                await model.aprepare()
            except Exception as exc:  # noqa: BLE001 - the first call raises it typed
                log.warning("model %r (%s) could not get ready before the first request: %s: %s",
                            key, model.name, type(exc).__name__, exc)


def _probe_file(path: Path, timeout: float) -> str | None:
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 1 << 20:
            return "the checkpoint disk is full"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            conn.execute("SELECT 1 FROM checkpoints LIMIT 1").fetchall()
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        log.error("storage probe of %s failed: %s: %s", path, type(exc).__name__, exc)
        return f"the checkpoint store failed ({type(exc).__name__})"
    return None


class GraphHost:
    """The served graphs by model name, with one shared SQLite connection per
    checkpoint file (opened by :meth:`start`) and the server's run limit."""

    def __init__(
        self, graphs: Mapping[str, SLMGraph], *, max_concurrency: int, max_queue: int, max_starting: int | None = None,
    ) -> None:
        if not graphs:
            raise ConfigError("graphs", "serve at least one graph")
        self.configured = dict(graphs)
        self.graphs: dict[str, SLMGraph] = dict(graphs)
        self.limiter = _Limiter(max_concurrency, max_queue, max_starting)
        self._stack: contextlib.AsyncExitStack | None = None
        self._threads: dict[str, list[Any]] = {}  # thread id -> [lock, requests holding or awaiting it]
        self.recovery: asyncio.Task[int] | None = None  # finishing what a crashed server left
        self._savers: dict[Path, BaseCheckpointSaver] = {}
        self.last_storage_fault = 0.0  # monotonic time of the last storage fault a run hit
        self.fault_hold_s = 30.0

    def names(self) -> list[str]:
        return list(self.graphs)

    def resolve(self, model: str) -> str:
        """The served graph for a model name; ``NAME:latest`` (Ollama style) matches ``NAME``."""
        if model in self.graphs:
            return model
        base, _, tag = model.partition(":")
        if tag == "latest" and base in self.graphs:
            return base
        raise UnknownModel(model, self.names())

    def graph(self, name: str) -> SLMGraph:
        return self.graphs[name]

    async def start(self) -> None:
        """Open each checkpoint file once and rebind the graphs to the shared saver,
        open each PostgreSQL store's pool, and ready every model
        (:func:`prepare_models`): all before the server accepts a request.

        A graph built with a checkpoint *path* would open a new SQLite connection per
        run; a server shares one per file instead.
        """
        self._stack = contextlib.AsyncExitStack()
        savers = self._savers = {}
        for name, g in self.configured.items():
            if g.checkpoint is None or isinstance(g.checkpoint, BaseCheckpointSaver):
                continue
            if g.runner.pg is not None:  # PostgreSQL: one pool for the server's life
                await self._stack.enter_async_context(g.runner.pg.session())
                continue
            path = Path(g.checkpoint).resolve()
            if path not in savers:
                savers[path] = await self._open(path)
            self.graphs[name] = SLMGraph(g.spec, checkpoint=savers[path], name=g.name)
        await prepare_models(self.graphs.values())
        self.recovery = asyncio.create_task(self._recover(), name="slmgraph-serve-recover")

    async def _recover(self) -> int:
        """Finish the runs an earlier server accepted but never finished (it crashed),
        in the background. Each graph takes only its own threads (``NAME/...``), so
        graphs sharing a checkpoint file do not resume each other's runs.

        With a shared PostgreSQL store, other server processes may die at any time:
        the search repeats every half lease, and the lease decides who finishes a
        dead process's run, once."""
        finished = await self._recover_once()
        shared = [g for g in self.graphs.values() if g.runner.pg is not None]
        if not shared:
            return finished
        every = max(0.5, min(g.spec.lease_ttl_s for g in shared) / 2)
        while True:
            await asyncio.sleep(every)
            finished += await self._recover_once()

    async def _recover_once(self) -> int:
        finished = 0
        for name, g in self.graphs.items():
            if g.checkpoint is None:
                continue
            try:
                done = await g.arecover(thread_prefix=f"{name}/")
            except Exception as exc:  # a server that cannot recover still serves
                log.error("could not recover the interrupted runs of %s: %s", name, exc)
                continue
            if done:
                log.info("finished %d run(s) of %s interrupted by an earlier crash", len(done), name)
            finished += len(done)
        return finished

    async def _open(self, path: Path) -> BaseCheckpointSaver:
        assert self._stack is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).close()
            saver = await self._stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            await saver.setup()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError("checkpoint", f"cannot open the SQLite checkpoint file {str(path)!r} ({exc})") from None
        return saver

    async def aclose(self) -> None:
        if self.recovery is not None:
            self.recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.recovery
            self.recovery = None
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self._savers = {}
        self.graphs = dict(self.configured)

    def thread_users(self, thread_id: str) -> int:
        """Requests running or waiting on ``thread_id``."""
        return self._threads[thread_id][1] if thread_id in self._threads else 0

    @contextlib.asynccontextmanager
    async def _one_run_per_thread(self, thread_id: str) -> AsyncIterator[None]:
        # Two runs on one thread would interleave their checkpoints: the later waits.
        entry = self._threads.setdefault(thread_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._threads[thread_id]

    @staticmethod
    def thread_id(name: str, conversation_id: str | None, tenant: str | None = None) -> str:
        """The graph thread of a conversation: ``NAME/ID``, or ``NAME/TENANT/ID`` for a
        client authenticated by an API key (``tenant`` identifies the key), so one
        key's conversation ids never reach another key's threads."""
        cid = conversation_id or uuid.uuid4().hex
        return f"{name}/{tenant}/{cid}" if tenant else f"{name}/{cid}"

    async def probe(self, timeout: float = 2.0) -> str | None:
        """``None`` when every checkpoint store answers, else what failed (no paths).

        Opens each shared SQLite file afresh (read-only, in a worker thread, bounded
        by ``timeout``) so that what is on disk is read, not the server connection's
        cache; checks its disk has room; and reports a storage fault a run hit in
        the last ``fault_hold_s`` seconds.
        """
        for path in self._savers:
            try:
                problem = await asyncio.wait_for(asyncio.to_thread(_probe_file, path, timeout), timeout)
            except TimeoutError:
                problem = f"the checkpoint store did not answer within {timeout:g}s"
            if problem is not None:
                return problem
        if self.last_storage_fault and time.monotonic() - self.last_storage_fault < self.fault_hold_s:
            return f"a run failed to write its checkpoint in the last {self.fault_hold_s:g}s"
        return None

    def storage_failed(self, exc: BaseException) -> None:
        """Record a storage fault a run hit (for :meth:`probe`) and log it whole."""
        self.last_storage_fault = time.monotonic()
        log.error("storage fault in a served run: %s: %s", type(exc).__name__, exc)

    async def events(
        self, name: str, text: str, thread_id: str, ticket: Ticket, idempotency_key: str | None = None,
    ) -> AsyncIterator[NodeEvent]:
        """Stream a run's node events from a queued slot.

        The run executes in its own task, after any earlier run on the same thread
        has finished. Closing this iterator early (the client went away) cancels
        that task and waits for it, so the run stops at a step boundary and its last
        checkpoint is whole before anything else touches the thread; the run is
        marked ``cancelled``. With ``idempotency_key`` (already scoped to the
        caller), a retry maps to the run recorded under it.
        """
        graph = self.graphs[name]
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            try:
                async with self._one_run_per_thread(thread_id), self.limiter.slot(ticket):
                    async for event in graph.astream(text, thread_id=thread_id, idempotency_key=idempotency_key):
                        queue.put_nowait(event)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(exc)
            else:
                queue.put_nowait(_END)

        try:
            task = asyncio.create_task(produce(), name=f"slmgraph-run-{thread_id}")
        except BaseException:
            ticket.release()
            raise
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not task.done():
                task.cancel()
            # Shielded: the caller may be inside a cancelled anyio scope.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
            ticket.release()  # a run cancelled before it started never took its slot
