"""Pieces of a durable run: the thread lease, stored side effects, and a checkpointer
guard that turns a storage failure into a typed :class:`~slmgraph.CheckpointError`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from .._context import EffectLog
from .._errors import CheckpointError, ThreadBusyError
from ._runs import RunStatus, RunStore, run_of

__all__ = ["GuardedSaver", "StoredEffects", "ThreadLease", "sqlite_file_of", "setup_saver", "OnBusy"]

#: What a run does when its thread is held by another run.
OnBusy = Literal["wait", "reject"]


class StoredEffects(EffectLog):
    """Side-effect results kept in the runs store, keyed by (thread, run, key)."""

    def __init__(self, store: RunStore, thread_id: str, run_id: str) -> None:
        super().__init__(scope=f"{thread_id}:{run_id}")
        self.store, self.thread_id, self.run_id = store, thread_id, run_id

    async def lookup(self, key: str) -> tuple[bool, Any]:
        return await self.store.call(self.store.effect, self.thread_id, self.run_id, key)

    async def save(self, key: str, result_json: str) -> None:
        await self.store.call(self.store.record_effect, self.thread_id, self.run_id, key, result_json)


class ThreadLease:
    """Holds a thread for one run: taken before the run, renewed while it runs,
    released after. ``lost`` turns true if another run took over an expired lease."""

    def __init__(self, store: RunStore, thread_id: str, run_id: str, *, ttl_s: float) -> None:
        self.store, self.thread_id, self.run_id, self.ttl_s = store, thread_id, run_id, ttl_s
        # Unique per attempt: two processes resuming the same run must not share a lease.
        self.holder = f"{run_id}/{uuid.uuid4().hex[:12]}"
        self.lost = False
        self.released = False

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
                holder = await self.store.call(
                    self.store.acquire, self.thread_id, self.holder, self.ttl_s, start=True, new=new
                )
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
        # In-memory leases never expire, so only a file's lease needs renewing.
        beat = asyncio.create_task(self._heartbeat(), name=f"slmgraph-lease-{self.thread_id}") \
            if self.store.durable else None
        try:
            yield self
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            if not self.released:
                # Synchronous on purpose: this also runs while a task is being cancelled.
                self.store.release(self.thread_id, self.holder)

    def finish(self, status: RunStatus, error: str | None = None) -> None:
        """Record how the run ended and release the thread in one write (blocking)."""
        self.store.finish(self.run_id, self.thread_id, status, error, self.holder)
        self.released = True

    async def afinish(self, status: RunStatus, error: str | None = None) -> None:
        await self.store.call(self.store.finish, self.run_id, self.thread_id, status, error, self.holder)
        self.released = True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            if not await self.store.call(self.store.renew, self.thread_id, self.holder, self.ttl_s):
                self.lost = True
                return


class GuardedSaver(BaseCheckpointSaver):
    """Delegates to a checkpointer and raises :class:`CheckpointError` when a write
    fails, so a full disk or a locked database stops the run with a typed error."""

    def __init__(self, inner: BaseCheckpointSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    @staticmethod
    def _thread(config: Any) -> str:
        return str((config or {}).get("configurable", {}).get("thread_id", "?"))

    @contextlib.contextmanager
    def _guard(self, config: Any) -> Iterator[None]:
        try:
            yield
        except CheckpointError:
            raise
        except Exception as exc:  # any storage failure: sqlite3.Error, OSError, driver errors
            raise CheckpointError(self._thread(config), f"{type(exc).__name__}: {exc}") from exc

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
            return self.inner.put(config, checkpoint, metadata, new_versions)

    def put_writes(self, config, writes: Sequence, task_id: str, task_path: str = ""):
        with self._guard(config):
            return self.inner.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        return self.inner.delete_thread(thread_id)

    async def aget_tuple(self, config):
        return await self.inner.aget_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config, checkpoint, metadata, new_versions):
        with self._guard(config):
            return await self.inner.aput(config, checkpoint, metadata, new_versions)

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
