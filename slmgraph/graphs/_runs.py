"""The durable runs table, thread leases and the side-effect log, in the checkpoint's SQLite file.

Three small tables live beside LangGraph's checkpoints:

* ``slmgraph_runs``: one row per accepted request (run id, thread id, input,
  status, error, owning process, timestamps), written *before* the graph starts,
  so a crash before the first checkpoint loses nothing.
* ``slmgraph_leases``: at most one row per thread, naming the run that holds it
  and until when; two runs on one thread never interleave, in one process or in
  several sharing the file.
* ``slmgraph_effects``: the stored result of each declared side effect, keyed by
  (thread, run, key), so a node that re-runs after a crash gets the stored result
  instead of repeating the effect.

Liveness of an owner is judged by its process (same host: is the pid alive) with a
lease expiry as the backstop. The file must be on a local disk, as SQLite requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .._errors import CheckpointError

__all__ = ["RunRecord", "RunStatus", "RunStore", "UNFINISHED"]

#: ``accepted``: recorded, not started (or waiting for its thread).
#: ``running``: the graph is executing it. ``done``: finished, final state checkpointed.
#: ``failed``: raised a typed error; resumable. ``rejected``: its thread was busy.
#: ``superseded``: a later run started on the thread after it was interrupted.
RunStatus = Literal["accepted", "running", "done", "failed", "rejected", "superseded"]

UNFINISHED = ("accepted", "running")

T = TypeVar("T")

HOST = socket.gethostname()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slmgraph_runs (
    run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, request TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS slmgraph_runs_thread ON slmgraph_runs (thread_id, created);
CREATE INDEX IF NOT EXISTS slmgraph_runs_status ON slmgraph_runs (status);
CREATE TABLE IF NOT EXISTS slmgraph_leases (
    thread_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slmgraph_effects (
    thread_id TEXT NOT NULL, run_id TEXT NOT NULL, key TEXT NOT NULL,
    result TEXT, created REAL NOT NULL, PRIMARY KEY (thread_id, run_id, key));
"""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One accepted request, as the runs table holds it."""

    run_id: str
    thread_id: str
    request: str
    status: RunStatus
    error: str | None
    pid: int
    host: str
    created: float
    updated: float


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


class RunStore:
    """The three tables, in the SQLite file at ``path`` (or in memory with ``None``).

    Every method is blocking and short; async callers run them in a worker thread
    (:meth:`call`). Each write method is one committed transaction, so a SIGKILL
    right after it returns cannot undo it.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._shared: sqlite3.Connection | None = None
        #: Graph sessions using this store; the owner closes it when none is left.
        self.sessions = 0
        self._ready = False

    @property
    def durable(self) -> bool:
        return self.path is not None

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one of this store's methods from async code: in a worker thread for a
        file (it may wait on a lock or fsync), inline for the in-memory store.

        Raises:
            CheckpointError: the file cannot be written (disk full, locked too long).
        """
        if self.path is None:
            return method(*args, **kwargs)
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            raise CheckpointError("", f"the runs table in {str(self.path)!r}: {type(exc).__name__}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        conn = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        # One connection per store, used by one thread at a time.
        with self._lock:
            if self._shared is None:
                conn = self._open()
                if self.path is not None:
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._shared = conn
            yield self._shared

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (one fsync), taken before reading, so two processes
        deciding about the same thread see each other's writes."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    # -- runs ---------------------------------------------------------------

    def begin(self, run_id: str, thread_id: str, request: str, ttl_s: float, holder: str = "") -> str | None:
        """Record a new request and, if its thread is free, take the thread, mark the
        thread's interrupted runs superseded and the run ``running``: all in one
        transaction. Returns ``None`` when the run holds the thread, else the live
        holder's run id (the run stays ``accepted``)."""
        now = time.time()
        with self._transaction() as c:
            c.execute(
                "INSERT INTO slmgraph_runs VALUES (?, ?, ?, 'accepted', NULL, ?, ?, ?, ?)",
                (run_id, thread_id, request, os.getpid(), HOST, now, now),
            )
            return self._take(c, thread_id, holder or run_id, ttl_s, start=True, new=True)

    def finish(self, run_id: str, thread_id: str, status: RunStatus, error: str | None = None, holder: str = "") -> None:
        """Record how a run ended and release its thread, in one transaction."""
        with self._transaction() as c:
            c.execute(
                "UPDATE slmgraph_runs SET status = ?, error = ?, pid = ?, host = ?, updated = ? WHERE run_id = ?",
                (status, error, os.getpid(), HOST, time.time(), run_id),
            )
            c.execute("DELETE FROM slmgraph_leases WHERE thread_id = ? AND run_id = ?", (thread_id, holder or run_id))

    def accept(self, run_id: str, thread_id: str, request: str) -> None:
        now = time.time()
        with self._conn() as c:
            c.execute(
                "INSERT INTO slmgraph_runs VALUES (?, ?, ?, 'accepted', NULL, ?, ?, ?, ?)",
                (run_id, thread_id, request, os.getpid(), HOST, now, now),
            )

    def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Record a run's new status; the calling process becomes its owner."""
        with self._conn() as c:
            c.execute(
                "UPDATE slmgraph_runs SET status = ?, error = ?, pid = ?, host = ?, updated = ? WHERE run_id = ?",
                (status, error, os.getpid(), HOST, time.time(), run_id),
            )

    def get(self, run_id: str) -> RunRecord | None:
        with self._conn() as c:
            row = c.execute("SELECT * FROM slmgraph_runs WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord(**dict(row)) if row else None

    def runs(self, thread_id: str | None = None) -> list[RunRecord]:
        """All recorded runs (of one thread), oldest first."""
        with self._conn() as c:
            if thread_id is None:
                rows = c.execute("SELECT * FROM slmgraph_runs ORDER BY created, rowid").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM slmgraph_runs WHERE thread_id = ? ORDER BY created, rowid", (thread_id,)
                ).fetchall()
        return [RunRecord(**dict(r)) for r in rows]

    def _owner_alive(self, c: sqlite3.Connection, run: RunRecord) -> bool:
        if run.host == HOST:
            return pid_alive(run.pid)
        lease = c.execute("SELECT * FROM slmgraph_leases WHERE thread_id = ?", (run.thread_id,)).fetchone()
        return bool(lease) and run_of(lease["run_id"]) == run.run_id and lease["expires"] > time.time()

    def orphaned(self, *, include_failed: bool = False) -> list[RunRecord]:
        """Unfinished runs whose owning process is gone, oldest first; with
        ``include_failed``, failed runs too."""
        wanted = (*UNFINISHED, "failed") if include_failed else UNFINISHED
        out = []
        with self._conn() as c:
            marks = ",".join("?" * len(wanted))
            rows = c.execute(
                f"SELECT * FROM slmgraph_runs WHERE status IN ({marks}) ORDER BY created, rowid", wanted
            ).fetchall()
            for row in rows:
                run = RunRecord(**dict(row))
                if run.status == "failed" or not self._owner_alive(c, run):
                    out.append(run)
        return out

    def latest_open(self, thread_id: str) -> RunRecord | None:
        """The thread's newest run that is accepted, running or failed."""
        for run in reversed(self.runs(thread_id)):
            if run.status in (*UNFINISHED, "failed"):
                return run
        return None

    def supersede(self, thread_id: str, run_id: str) -> int:
        """Mark the thread's interrupted or failed earlier runs ``superseded``: a new
        run on the thread starts from a fresh input and they can no longer resume."""
        with self._transaction() as c:
            return self._supersede(c, thread_id, run_id)

    def _supersede(self, c: sqlite3.Connection, thread_id: str, run_id: str) -> int:
        rows = c.execute(
            "SELECT * FROM slmgraph_runs WHERE thread_id = ? AND run_id != ? AND status IN (?, ?, 'failed')",
            (thread_id, run_id, *UNFINISHED),
        ).fetchall()
        stale = [r for r in (RunRecord(**dict(row)) for row in rows) if r.status == "failed" or not self._owner_alive(c, r)]
        for run in stale:
            c.execute(
                "UPDATE slmgraph_runs SET status = 'superseded', error = ?, updated = ? WHERE run_id = ?",
                (f"a later run ({run_id}) started on the thread", time.time(), run.run_id),
            )
        return len(stale)

    # -- leases -------------------------------------------------------------

    def acquire(self, thread_id: str, holder: str, ttl_s: float, *, start: bool = False, new: bool = False) -> str | None:
        """Take the thread for ``holder`` (``"<run id>/<token>"``, unique per
        attempt); with ``start`` also mark the run ``running``, with ``new`` also
        supersede the thread's interrupted runs. Returns ``None`` on success, else
        the live holder."""
        with self._transaction() as c:
            return self._take(c, thread_id, holder, ttl_s, start=start, new=new)

    def _take(self, c: sqlite3.Connection, thread_id: str, holder: str, ttl_s: float, *, start: bool, new: bool) -> str | None:
        row = c.execute("SELECT * FROM slmgraph_leases WHERE thread_id = ?", (thread_id,)).fetchone()
        if row is not None and row["run_id"] != holder and not _stale(row):
            return str(row["run_id"])
        c.execute(
            "INSERT OR REPLACE INTO slmgraph_leases VALUES (?, ?, ?, ?, ?)",
            (thread_id, holder, os.getpid(), HOST, time.time() + ttl_s),
        )
        run_id = run_of(holder)
        if new:
            self._supersede(c, thread_id, run_id)
        if start:
            c.execute(
                "UPDATE slmgraph_runs SET status = 'running', pid = ?, host = ?, updated = ? "
                "WHERE run_id = ? AND status IN ('accepted', 'running', 'failed')",
                (os.getpid(), HOST, time.time(), run_id),
            )
        return None

    def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; ``False`` when ``holder`` no longer holds it."""
        with self._conn() as c:
            cur = c.execute(
                "UPDATE slmgraph_leases SET expires = ? WHERE thread_id = ? AND run_id = ?",
                (time.time() + ttl_s, thread_id, holder),
            )
            return cur.rowcount == 1

    def release(self, thread_id: str, holder: str) -> None:
        with self._conn() as c:
            c.execute("DELETE FROM slmgraph_leases WHERE thread_id = ? AND run_id = ?", (thread_id, holder))

    # -- effects ------------------------------------------------------------

    def effect(self, thread_id: str, run_id: str, key: str) -> tuple[bool, Any]:
        """``(True, result)`` when the effect already ran and its result is stored."""
        with self._conn() as c:
            row = c.execute(
                "SELECT result FROM slmgraph_effects WHERE thread_id = ? AND run_id = ? AND key = ?",
                (thread_id, run_id, key),
            ).fetchone()
        if row is None or row["result"] is None:
            return False, None
        return True, json.loads(row["result"])

    def record_effect(self, thread_id: str, run_id: str, key: str, result_json: str) -> None:
        with self._conn() as c:
            c.execute(
                "INSERT OR REPLACE INTO slmgraph_effects VALUES (?, ?, ?, ?, ?)",
                (thread_id, run_id, key, result_json, time.time()),
            )


def run_of(holder: str) -> str:
    """The run id in a lease holder ``"<run id>/<token>"``."""
    return holder.split("/", 1)[0]


def _stale(lease: sqlite3.Row) -> bool:
    if lease["expires"] <= time.time():
        return True
    return lease["host"] == HOST and not pid_alive(int(lease["pid"]))
