"""One worker thread that runs blocking jobs in order for an event loop.

:class:`Worker` is what the SQLite runs store writes through: the loop hands it
a job and awaits the job's end, never the I/O itself. It is leaner than
``loop.run_in_executor`` (no ``concurrent.futures`` future to chain, one call
back into the loop per job), because a run makes two such calls and both are in
every run's cost.

A job, once handed over, always runs to its end: :meth:`Worker.call` waits for
it even when the awaiting task is cancelled meanwhile, and re-raises the
cancellation afterwards. So a bookkeeping write (recording a run, releasing its
thread) is never left half-known by a caller that went away.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Worker", "SaverThread"]

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("fn", "loop", "fut", "finished", "after")

    def __init__(self, fn: Callable[[], T], loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.loop = fn, loop
        self.fut: asyncio.Future[T] = loop.create_future()
        self.finished = False
        #: Set when the job ends, for a caller that was cancelled while it ran.
        self.after: asyncio.Future[None] | None = None


def _deliver(job: _Job[Any], ok: bool, value: Any) -> None:
    """On the loop: hand the job's outcome to whoever awaits it."""
    job.finished = True
    if not job.fut.done():
        if ok:
            job.fut.set_result(value)
        else:
            job.fut.set_exception(value)
    if job.after is not None and not job.after.done():
        job.after.set_result(None)


def _run_job(job: _Job[Any]) -> None:
    """On the worker thread: run the job and hand its outcome to the loop."""
    try:
        outcome: tuple[bool, Any] = (True, job.fn())
    except BaseException as exc:  # handed to the caller, never lost here
        outcome = (False, exc)
    try:
        job.loop.call_soon_threadsafe(_deliver, job, *outcome)
    except RuntimeError:  # the loop closed meanwhile: nobody is waiting
        pass


async def _outcome(job: _Job[T]) -> T:
    """The job's result, waited for to the job's end even through a cancellation
    (which is re-raised once the job has ended)."""
    try:
        return await job.fut
    except asyncio.CancelledError as exc:
        if not job.fut.cancelled():
            raise  # cancelled after the job ended: nothing to wait for
        cancelled = exc
    while not job.finished:
        job.after = job.loop.create_future()
        try:
            await job.after
        except asyncio.CancelledError as again:
            cancelled = again
    raise cancelled


class Worker:
    """A thread of its own, started on first use (and again in a forked child,
    which inherits the object but not the thread); jobs run one at a time, in
    the order they were handed over."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job[Any] | None] | None = None
        self._pid = 0

    def _queue(self) -> queue.SimpleQueue[_Job[Any] | None]:
        if self._jobs is None or self._pid != os.getpid():
            self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=self._serve, args=(self._jobs,), name=self.name, daemon=True).start()
        return self._jobs

    @property
    def started(self) -> bool:
        """Whether this process has the thread running."""
        return self._jobs is not None and self._pid == os.getpid()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job[Any] | None]) -> None:
        while (job := jobs.get()) is not None:
            _run_job(job)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the thread and return (or raise) what it did; see the
        module docstring for cancellation."""
        job = _Job(fn, asyncio.get_running_loop())
        self._queue().put(job)
        return await _outcome(job)


class SaverThread:
    """The thread and connection of LangGraph's ``AsyncSqliteSaver`` (an aiosqlite
    connection), lent to the runs table so that it writes through the very
    connection the checkpoints use.

    One connection instead of two means neither has to reload its page cache
    after the other wrote, and no second writer takes the file's locks in turn.
    A job runs on the connection's own thread while the saver's lock is held, so
    it never interleaves with a checkpoint write; like :meth:`Worker.call`, it
    always runs to its end.

    This reaches into aiosqlite (its job queue and raw connection), so
    :meth:`of` returns ``None`` for any saver or connection that does not look
    exactly as expected, and the runs table then keeps a connection of its own.
    """

    def __init__(self, saver: Any) -> None:
        self.saver = saver
        self.prepared: set[int] = set()  # connections the runs tables were made on

    @classmethod
    def of(cls, saver: Any) -> SaverThread | None:
        conn = getattr(saver, "conn", None)
        if type(saver).__module__ != "langgraph.checkpoint.sqlite.aio" or not isinstance(
            getattr(saver, "lock", None), asyncio.Lock
        ):
            return None
        if not isinstance(getattr(conn, "_tx", None), queue.SimpleQueue) or not hasattr(type(conn), "_conn"):
            return None
        return cls(saver)

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(sqlite3_connection)`` on the saver's thread, holding its lock."""
        conn = self.saver.conn
        async with self.saver.lock:
            job = _Job(lambda: fn(conn._conn), asyncio.get_running_loop())
            conn._tx.put_nowait((None, functools.partial(_run_job, job)))
            return await _outcome(job)
