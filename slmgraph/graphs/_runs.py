"""The runs store: the durable runs table, thread leases and the side-effect log.

:class:`RunStore` is the async interface a graph's runner talks to; its
implementations keep three small tables beside LangGraph's checkpoints:

* runs: one row per accepted request (run id, thread id, input, status, error,
  owning process, timestamps, idempotency key, stored result), written *before*
  the graph starts, so a crash before the first checkpoint loses nothing;
* leases: at most one row per thread, naming the run that holds it and until
  when; two runs on one thread never interleave, in one process or in several
  sharing the store;
* effects: the stored result of each declared side effect, keyed by (thread,
  run, key), so a node that re-runs after a crash gets the stored result instead
  of repeating the effect.

Every method is a coroutine and never blocks the event loop: a store on a file
or a server does its I/O off the loop (see :mod:`._runs_sqlite`), so it never
holds the loop while it waits on a lock that the checkpointer's open transaction
holds. Each write method is one committed transaction, so a SIGKILL right after
it returns cannot undo it.

Implementations: :class:`~._runs_sqlite.SqliteRunStore` (the checkpoint's SQLite
file) and :class:`~._runs_memory.MemoryRunStore` (a graph without a file).
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["RunRecord", "RunStatus", "RunStore", "UNFINISHED", "FINISHED", "HOST", "pid_alive", "run_of", "new_id"]

#: ``accepted``: recorded, not started (or waiting for its thread).
#: ``running``: the graph is executing it. ``done``: finished, final state checkpointed.
#: ``failed``: raised a typed error; resumable. ``rejected``: its thread was busy.
#: ``superseded``: a later run started on the thread after it was interrupted.
#: ``cancelled``: its caller went away (the task was cancelled) before it ended;
#: recovery never starts it again.
RunStatus = Literal["accepted", "running", "done", "failed", "rejected", "superseded", "cancelled"]

#: Runs that recovery finishes when their owning process is gone.
UNFINISHED: tuple[RunStatus, ...] = ("accepted", "running")
#: Runs that ended for good: recovery leaves them alone.
FINISHED: tuple[RunStatus, ...] = ("done", "rejected", "superseded", "cancelled")

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One accepted request, as the runs table holds it.

    ``idempotency_key`` is the caller's key for the request (see
    ``SLMGraph.ainvoke(idempotency_key=...)``); ``result`` is the finished run's
    result as JSON, kept only for keyed runs so a retry gets it back.
    """

    run_id: str
    thread_id: str
    request: str
    status: RunStatus
    error: str | None
    pid: int
    host: str
    created: float
    updated: float
    idempotency_key: str | None = None
    result: str | None = None


class RunStore(ABC):
    """The async runs store behind a graph's runner (SQLite, memory, PostgreSQL...).

    A lease ``holder`` is ``"<run id>/<token>"``, unique per attempt, so two
    processes resuming the same run never share a lease. "Owner alive" means the
    run's process is alive (same host) or, across hosts, its lease is unexpired.
    """

    #: Whether the store outlives the process (a file or a server).
    durable: bool = False
    #: Whether :meth:`finish` can confirm that a checkpoint is on disk (the store
    #: shares the checkpoints' file): ``finish(..., checkpoint_id=...)``.
    confirms_checkpoints: bool = False
    #: Whether every call runs to its end even when the awaiting task is cancelled
    #: meanwhile (re-raising the cancellation after), so callers need not
    #: :func:`~._durable.settle` it.
    settles: bool = False

    def __init__(self) -> None:
        #: Graph sessions using this store; the runner closes it when none is left.
        self.sessions = 0

    # -- runs ---------------------------------------------------------------

    @abstractmethod
    async def begin(self, run_id: str, thread_id: str, request: str, ttl_s: float, holder: str = "") -> str | None:
        """Record a new request and, if its thread is free, take the thread, mark the
        thread's interrupted runs superseded and the run ``running``: all in one
        transaction. Returns ``None`` when the run holds the thread, else the live
        holder (the run stays ``accepted``)."""

    @abstractmethod
    async def accept(self, run_id: str, thread_id: str, request: str, *, idempotency_key: str | None = None) -> RunRecord | None:
        """Record a new ``accepted`` request. With ``idempotency_key``, atomically:
        when a run is already recorded under that key nothing is written and that
        run is returned; else ``None``."""

    @abstractmethod
    async def finish(
        self, run_id: str, thread_id: str, status: RunStatus, error: str | None = None, holder: str = "",
        *, result: str | None = None,
    ) -> bool | None:
        """Record how a run ended (with ``result`` JSON for a keyed run) and release
        its thread, in one transaction.

        A store that :attr:`confirms_checkpoints` also takes ``checkpoint_id``: the
        run's final checkpoint, which must be the thread's newest one in the file,
        read in the same transaction; when it is not, nothing is written and
        ``False`` is returned."""

    @abstractmethod
    async def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Record a run's new status; the calling process becomes its owner."""

    @abstractmethod
    async def get(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def runs(self, thread_id: str | None = None) -> list[RunRecord]:
        """All recorded runs (of one thread), oldest first."""

    @abstractmethod
    async def orphaned(self, *, include_failed: bool = False) -> list[RunRecord]:
        """Unfinished runs whose owner is gone, oldest first; with
        ``include_failed``, failed runs too. Never cancelled or finished runs."""

    async def statuses(self, thread_ids: Sequence[str]) -> dict[str, RunStatus]:
        """The newest run's status of each of ``thread_ids`` that has runs (a batch
        shard asks about its own rows only). Stores override this with one query."""
        wanted = set(thread_ids)
        out: dict[str, RunStatus] = {}
        for run in await self.runs():  # oldest first: the newest run's status wins
            if run.thread_id in wanted:
                out[run.thread_id] = run.status
        return out

    async def latest_open(self, thread_id: str) -> RunRecord | None:
        """The thread's newest run that is accepted, running or failed."""
        for run in reversed(await self.runs(thread_id)):
            if run.status in (*UNFINISHED, "failed"):
                return run
        return None

    @abstractmethod
    async def by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run recorded under an idempotency key, if any."""

    @abstractmethod
    async def owner_alive(self, run: RunRecord) -> bool:
        """Whether the process that owns ``run`` is still alive."""

    @abstractmethod
    async def supersede(self, thread_id: str, run_id: str) -> int:
        """Mark the thread's interrupted or failed earlier runs ``superseded``."""

    # -- leases -------------------------------------------------------------

    @abstractmethod
    async def acquire(self, thread_id: str, holder: str, ttl_s: float, *, start: bool = False, new: bool = False) -> str | None:
        """Take the thread for ``holder``; with ``start`` also mark the run
        ``running`` (from accepted, running or failed), with ``new`` also supersede
        the thread's interrupted runs. Returns ``None`` on success, else the live
        holder."""

    @abstractmethod
    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; ``False`` when ``holder`` no longer holds it."""

    @abstractmethod
    async def release(self, thread_id: str, holder: str) -> None: ...

    # -- effects ------------------------------------------------------------

    @abstractmethod
    async def effect(self, thread_id: str, run_id: str, key: str) -> tuple[bool, Any]:
        """``(True, result)`` when the effect already ran and its result is stored."""

    @abstractmethod
    async def record_effect(self, thread_id: str, run_id: str, key: str, result_json: str) -> None: ...

    # -- lifecycle ----------------------------------------------------------

    async def close(self) -> None:
        """Close connections; the store may be used again afterwards (it reopens)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def new_id(nbytes: int = 16) -> str:
    """A fresh random id in hex (thread and run ids: 32 digits, as a UUID's hex),
    without building a ``uuid.UUID`` each time."""
    return os.urandom(nbytes).hex()


def run_of(holder: str) -> str:
    """The run id in a lease holder ``"<run id>/<token>"``."""
    return holder.split("/", 1)[0]
