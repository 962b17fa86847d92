"""The start gate: in a burst, the first runs admitted reach their first model call first.

A run does its set-up before it calls a model: it is recorded, takes its thread's
lease and writes its first checkpoints, which on PostgreSQL is some forty waits on
the database. When a burst admits many runs at once, their set-ups interleave on
the event loop, so the first run's model call leaves only when nearly all of them
are set up, and the model hosts sit idle meanwhile (measured in
``benchmarks/scale_out.py``: 0.15 to 0.4 s with four server processes on two cores).

A :class:`StartGate` lets at most ``limit`` runs be in set-up at once. A run holds a
place from the moment it has its slot until its first model call is *requested*
(not granted: a run waiting for a busy model host does not hold the gate) or until
it ends, whichever comes first. :func:`started` is that signal; every model call
slmgraph makes goes through :meth:`slmgraph.RunContext.call`, which sends it.

A run never waits for the gate longer than ``max_wait_s``: one whose set-up stalls
(its thread leased by another process, say) cannot hold back the others for more
than that, and a run that waited that long goes on without a place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

__all__ = ["StartGate", "started"]

_release: ContextVar[Callable[[], None] | None] = ContextVar("slmgraph_start_gate", default=None)


def started() -> None:
    """Tell the gate this run (the current context's) is about to call a model."""
    release = _release.get()
    if release is not None:
        release()


class StartGate:
    """At most ``limit`` runs in set-up at once, each waiting at most ``max_wait_s``."""

    def __init__(self, limit: int, *, max_wait_s: float = 0.25) -> None:
        if limit < 1:
            raise ValueError("a start gate needs a limit of at least 1")
        self.limit = limit
        self.max_wait_s = max_wait_s
        self._sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # made on the loop that uses it
            self._sem = asyncio.Semaphore(self.limit)
        return self._sem

    @contextlib.asynccontextmanager
    async def starting(self) -> AsyncIterator[None]:
        """Hold a place (or wait for one, at most ``max_wait_s``) for the body's run
        until its first model call or its end. Model calls in tasks the body starts
        (LangGraph's nodes) see the place through a context variable."""
        sem = self._semaphore()
        if not sem.locked():  # a free place: taken at once, without a timer task
            held = await sem.acquire()
        else:
            try:
                held = await asyncio.wait_for(sem.acquire(), self.max_wait_s)
            except TimeoutError:
                held = False
        done = not held

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                sem.release()

        token = _release.set(release)
        try:
            yield
        finally:
            _release.reset(token)
            release()
