"""Pieces of a durable run: the thread lease, stored side effects, and a checkpointer
guard that turns a storage failure into a typed :class:`~slmgraph.CheckpointError`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from .._context import EffectLog
from .._errors import CheckpointError, ConfigError, ThreadBusyError
from ._runs import RunStatus, RunStore, new_id, run_of

__all__ = [
    "GuardedSaver", "StoredEffects", "ThreadLease", "sqlite_file_of", "setup_saver", "OnBusy",
    "SHUTDOWN", "ending", "settle", "settled", "sqlite_saver",
]

log = logging.getLogger("slmgraph.runs")
T = TypeVar("T")

#: What a run does when its thread is held by another run.
OnBusy = Literal["wait", "reject"]


#: The message of a cancellation that stops a run because the process shuts down
#: (``task.cancel(SHUTDOWN)``): such a run stays recoverable instead of being
#: marked ``cancelled``.
SHUTDOWN = "slmgraph: the process is shutting down"


def ending(exc: BaseException) -> tuple[RunStatus | None, str]:
    """How a run that raised ``exc`` ends: ``cancelled`` when its caller went away
    (the task was cancelled, or the consumer closed the stream), ``None`` (left
    recoverable) when cancelled with :data:`SHUTDOWN`, else ``failed``."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        if SHUTDOWN in exc.args:
            return None, "interrupted: the process shut down"
        return "cancelled", "cancelled: the caller went away before the run ended"
    return "failed", f"{type(exc).__name__}: {exc}"[:2000]


_settling: set[asyncio.Future[Any]] = set()


async def settle(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the awaiting task is cancelled meanwhile
    (then the cancellation is re-raised once ``aw`` is done).

    For bookkeeping writes that must land: recording a run, marking it cancelled,
    releasing its lease. ``aw`` runs in its own task, so a cancellation (asyncio's
    or an anyio scope's, which repeats at every await) never interrupts it halfway.
    """
    task = asyncio.ensure_future(aw)
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.cancelled():
                raise
            cancelled = exc
    if cancelled is not None:
        task.exception()  # retrieved: the cancellation wins, the write's outcome is logged by the caller
        raise cancelled
    return task.result()


def settled(store: RunStore, aw: Awaitable[T]) -> Awaitable[T]:
    """``aw``, a call on ``store``, awaited to its end through a cancellation: as
    it is when the store's calls already do that (:attr:`RunStore.settles`), else
    through :func:`settle`."""
    return aw if store.settles else settle(aw)


class StoredEffects(EffectLog):
    """Side-effect results kept in the runs store, keyed by (thread, run, key)."""

    def __init__(self, store: RunStore, thread_id: str, run_id: str) -> None:
        super().__init__(scope=f"{thread_id}:{run_id}")
        self.store, self.thread_id, self.run_id = store, thread_id, run_id

    async def lookup(self, key: str) -> tuple[bool, Any]:
        return await self.store.effect(self.thread_id, self.run_id, key)

    async def save(self, key: str, result_json: str) -> None:
        # Shielded: once the effect ran, its result must be stored even if the run is cancelled.
        await settled(self.store, self.store.record_effect(self.thread_id, self.run_id, key, result_json))


class ThreadLease:
    """Holds a thread for one run: taken before the run, renewed while it runs,
    released after. ``lost`` turns true if another run took over an expired lease."""

    def __init__(self, store: RunStore, thread_id: str, run_id: str, *, ttl_s: float) -> None:
        self.store, self.thread_id, self.run_id, self.ttl_s = store, thread_id, run_id, ttl_s
        # Unique per attempt: two processes resuming the same run must not share a lease.
        self.holder = f"{run_id}/{new_id(6)}"
        self.lost = False
        self.released = False
        #: Keep the finished run's result in the runs table (a run with an idempotency key).
        self.keep_result = False

    async def acquire(self, on_busy: OnBusy, timeout_s: float, *, new: bool = False, holder: str | None = "") -> None:
        """Take the thread and mark the run running, waiting up to ``timeout_s`` with
        ``"wait"``; ``new`` supersedes the thread's interrupted runs; ``holder`` is
        the result of a first attempt already made (``None``: it succeeded).

        Raises:
            ThreadBusyError: busy and ``"reject"``, or still busy at the deadline.
        """
        started = time.monotonic()
        delay = 0.02
        while True:
            if holder == "":
                holder = await settled(self.store, self.store.acquire(self.thread_id, self.holder, self.ttl_s, start=True, new=new))
            if holder is None:
                return
            waited = time.monotonic() - started
            if on_busy == "reject":
                raise ThreadBusyError(self.thread_id, run_of(holder))
            if waited >= timeout_s:
                raise ThreadBusyError(self.thread_id, run_of(holder), waited_s=waited)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            holder = ""

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[ThreadLease]:
        """Renew the (already acquired) lease in the background; release on exit."""
        # In-memory leases never expire, so only a durable lease needs renewing.
        beat = _Heartbeat(self) if self.store.durable else None
        try:
            yield self
        finally:
            try:
                if beat is not None:
                    await beat.stop()
            finally:
                if not self.released:
                    await self.release()

    async def release(self) -> None:
        """Release the thread without recording an outcome (shielded)."""
        await settled(self.store, self.store.release(self.thread_id, self.holder))
        self.released = True

    async def finish(
        self, status: RunStatus, error: str | None = None, *, result: str | None = None, checkpoint_id: str | None = None,
    ) -> bool:
        """Record how the run ended and release the thread in one write; shielded,
        so it lands even while the run's task is being cancelled.

        With ``checkpoint_id`` (a store that :attr:`~RunStore.confirms_checkpoints`),
        the write happens only if that checkpoint is the thread's newest on disk;
        ``False`` when it is not (nothing written, the thread still held)."""
        keep = result if self.keep_result and status == "done" else None
        confirm = {"checkpoint_id": checkpoint_id} if checkpoint_id is not None else {}
        written = await settled(self.store, self.store.finish(self.run_id, self.thread_id, status, error, self.holder, result=keep, **confirm))
        if written is False:
            return False
        self.released = True
        return True

    async def end(self, exc: BaseException) -> None:
        """Record a run that raised ``exc`` (see :func:`ending`); a storage failure
        here is logged, never raised over the run's own error."""
        status, error = ending(exc)
        try:
            if status is None:
                await self.release()
            else:
                await self.finish(status, error)
        except Exception as also:
            log.error("run %s ended (%s) and could not be recorded: %s", self.run_id, error, also)



class _Heartbeat:
    """Renews a held lease every third of its time to live, until stopped; a renewal
    that finds the lease taken over marks it ``lost``.

    A timer rather than a task per run: most runs end long before the first
    renewal, and then only the timer is cancelled. A renewal runs as a task of its
    own while it is due; :meth:`stop` waits for one in flight."""

    __slots__ = ("lease", "timer", "renewal")

    def __init__(self, lease: ThreadLease) -> None:
        self.lease = lease
        self.renewal: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(lease.ttl_s / 3, self._due)

    def _due(self) -> None:
        self.timer = None
        self.renewal = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        lease = self.lease
        if not await lease.store.renew(lease.thread_id, lease.holder, lease.ttl_s):
            lease.lost = True
            return
        if self.renewal is not None:  # not stopped meanwhile
            self.timer = asyncio.get_running_loop().call_later(lease.ttl_s / 3, self._due)

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        renewal, self.renewal = self.renewal, None
        if renewal is not None:
            renewal.cancel()
            await settle(asyncio.wait([renewal]))
            if not renewal.cancelled() and renewal.exception() is not None:
                log.warning("lease of thread %s: a renewal failed: %s", self.lease.thread_id, renewal.exception())


class _Guard:
    """Turns a storage failure (sqlite3.Error, OSError, driver errors) inside the
    block into a :class:`CheckpointError` for the config's thread. A plain class,
    not ``contextlib.contextmanager``: it wraps every checkpoint write."""

    __slots__ = ("thread", "config")

    def __init__(self, thread: Any, config: Any) -> None:
        self.thread, self.config = thread, config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, CheckpointError):
            raise CheckpointError(self.thread(self.config), f"{type(exc).__name__}: {exc}") from exc


class GuardedSaver(BaseCheckpointSaver):
    """Delegates to a checkpointer and raises :class:`CheckpointError` when a write
    fails, so a full disk or a locked database stops the run with a typed error.

    It also remembers the id of the newest root checkpoint it wrote for each thread
    a runner is :meth:`watch`-ing, so a finished run can be confirmed on disk by id
    without asking LangGraph to stream every checkpoint."""

    def __init__(self, inner: BaseCheckpointSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self._newest: dict[str, str | None] = {}

    @staticmethod
    def _thread(config: Any) -> str:
        return str((config or {}).get("configurable", {}).get("thread_id", "?"))

    def _guard(self, config: Any) -> _Guard:
        return _Guard(self._thread, config)

    def watch(self, thread_id: str) -> None:
        """Start noting the newest root checkpoint written for ``thread_id``."""
        self._newest[thread_id] = None

    def newest(self, thread_id: str) -> str | None:
        """Stop watching ``thread_id``; the id of the last root checkpoint written
        for it since :meth:`watch`, or ``None``."""
        return self._newest.pop(thread_id, None)

    @property
    def config_specs(self) -> list:
        return self.inner.config_specs

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.inner.get_next_version(current, channel)

    def get_tuple(self, config):
        return self.inner.get_tuple(config)

    def list(self, config, *, filter=None, before=None, limit=None):
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def put(self, config, checkpoint, metadata, new_versions):
        with self._guard(config):
            out = self.inner.put(config, checkpoint, metadata, new_versions)
        self._noted(config, checkpoint)
        return out

    def put_writes(self, config, writes: Sequence, task_id: str, task_path: str = ""):
        with self._guard(config):
            return self.inner.put_writes(config, writes, task_id, task_path)

    def _noted(self, config: Any, checkpoint: Any) -> None:
        if self._newest:
            conf = config["configurable"]
            thread_id = conf.get("thread_id")
            if thread_id in self._newest and not conf.get("checkpoint_ns"):
                self._newest[thread_id] = checkpoint["id"]

    def delete_thread(self, thread_id: str) -> None:
        return self.inner.delete_thread(thread_id)

    async def aget_tuple(self, config):
        return await self.inner.aget_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config, checkpoint, metadata, new_versions):
        with self._guard(config):
            out = await self.inner.aput(config, checkpoint, metadata, new_versions)
        self._noted(config, checkpoint)
        return out

    async def aput_writes(self, config, writes: Sequence, task_id: str, task_path: str = ""):
        with self._guard(config):
            return await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        return await self.inner.adelete_thread(thread_id)

    def get_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_delta_channel_history(*args, **kwargs)

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.aget_delta_channel_history(*args, **kwargs)


async def sqlite_file_of(saver: BaseCheckpointSaver) -> Path | None:
    """The database file behind a LangGraph SQLite saver, so the runs table can live
    in the same file; ``None`` for other savers or an in-memory database."""
    conn = getattr(saver, "conn", None)
    if conn is None or type(saver).__module__.split(".")[:3] != ["langgraph", "checkpoint", "sqlite"]:
        return None
    try:
        result = conn.execute("PRAGMA database_list")
        if inspect.isawaitable(result):  # aiosqlite
            cursor = await result
            rows = await cursor.fetchall()
            await cursor.close()
        else:
            rows = result.fetchall()
    except Exception:  # a closed or foreign connection: treat as not a file
        return None
    for row in rows:
        if row[1] == "main" and row[2]:
            return Path(row[2])
    return None


@contextlib.asynccontextmanager
async def sqlite_saver(path: Path) -> AsyncIterator[BaseCheckpointSaver]:
    """LangGraph's async SQLite saver on ``path``, set up (its folder made).

    Raises:
        ConfigError: the file cannot be opened as a SQLite database.
    """
    import sqlite3

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    def probe() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()

    async with contextlib.AsyncExitStack() as stack:
        try:
            # Probe first, off the loop: a failed aiosqlite connect leaves a worker
            # thread that later reports into a closed event loop.
            await asyncio.to_thread(probe)
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            await setup_saver(saver)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                "checkpoint", f"cannot open the SQLite checkpoint file {str(path)!r} ({exc}); "
                "choose a writable path, or checkpoint=None to run without persistence"
            ) from None
        yield saver


async def setup_saver(saver: Any, *, attempts: int = 8) -> None:
    """``saver.setup()``, retried while another connection briefly holds the file
    (SQLite can report "database is locked" at once, without waiting, when a WAL
    file is being opened by several connections)."""
    import sqlite3

    for attempt in range(attempts):
        try:
            await saver.setup()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
