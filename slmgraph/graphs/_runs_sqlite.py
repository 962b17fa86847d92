"""The runs store in the checkpoint's SQLite file, written off the event loop.

Every statement runs on one thread the loop only awaits: the store's own worker
thread with its own connection or, when the graph was given LangGraph's async
SQLite saver, the saver's thread and connection, borrowed under the saver's lock
(one connection for both, so neither reloads its cache after the other wrote).
This is what keeps a served graph from freezing. LangGraph's async checkpointer
holds SQLite's write lock across an ``await`` (between its INSERTs and its
COMMIT); a runs-table write that ran *on the loop* would wait for that lock while
the loop, the only thing that can finish the checkpointer's transaction, waits
for the write: a deadlock that only SQLite's busy timeout breaks. Off the loop,
the worker waits, the loop runs the checkpointer's commit, and the worker goes on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._errors import CheckpointError
from ._runs import HOST, UNFINISHED, RunRecord, RunStatus, RunStore
from ._sqlite_sql import (
    _insert, _latest_checkpoint, _lease, _live_holder, _make_tables, _owner_alive, _record, _set_status, _supersede,
    _take,
)
from ._worker import SaverThread, Worker

__all__ = ["SqliteRunStore"]

T = TypeVar("T")

class SqliteRunStore(RunStore):
    """The three tables in the SQLite file at ``path`` (on a local disk, as SQLite
    requires). Liveness of an owner is judged by its process (same host) with a
    lease expiry as the backstop."""

    durable = True
    confirms_checkpoints = True
    settles = True

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, saver: Any = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0  # the process that opened it (a forked child opens its own)
        self._level = ""  # the connection's PRAGMA synchronous
        #: The store's one thread, kept for the store's life: a run costs a hop to
        #: it, never a new thread or a new connection.
        self._worker = Worker("slmgraph-runs")
        #: With LangGraph's async SQLite saver on the same file: its connection,
        #: lent to the runs table (see :class:`SaverThread`), instead of our own.
        self._lent = SaverThread.of(saver) if saver is not None else None
        self._lent_level = 2  # the lent connection's own PRAGMA synchronous, restored after each job

    # -- the worker ---------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, synced: bool = True) -> T:
        """Run ``fn(conn, ...)`` off the loop (on the store's worker thread, or the
        saver's when it lends its connection), to its end even if the caller is
        cancelled meanwhile (:attr:`settles`).

        Every commit is fsync'd (``PRAGMA synchronous=FULL``) unless ``synced`` is
        false (``NORMAL``: on disk for any process crash, and fsync'd by the next
        synced commit to the file, such as LangGraph's next checkpoint; see
        :meth:`begin` and :meth:`finish`).

        Raises:
            CheckpointError: the file cannot be written (disk full, locked too long).
        """
        try:
            if self._lent is not None:
                return await self._lent.call(lambda conn: self._on_lent(conn, synced, fn, args))
            return await self._worker.call(lambda: self._on_own(synced, fn, args))
        except (sqlite3.Error, OSError) as exc:
            raise CheckpointError("", f"the runs table in {self.path.name!r}: {type(exc).__name__}: {exc}") from exc

    def _on_own(self, synced: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._connection()
        self._sync(conn, synced)
        return fn(conn, *args)

    def _on_lent(self, conn: sqlite3.Connection, synced: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """One job on the saver's connection, left as it was found: its row factory,
        its ``synchronous`` level, and no transaction open (the saver's connection
        opens one implicitly before a write; it is committed here)."""
        lent = self._lent
        assert lent is not None
        if id(conn) not in lent.prepared:
            _make_tables(conn)
            self._lent_level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
            lent.prepared.add(id(conn))
        rows, conn.row_factory = conn.row_factory, sqlite3.Row
        if not synced:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            out = fn(conn, *args)
            if conn.in_transaction:
                conn.commit()
            return out
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        finally:
            conn.row_factory = rows
            if not synced:
                conn.execute(f"PRAGMA synchronous={self._lent_level}")

    def _sync(self, conn: sqlite3.Connection, synced: bool) -> None:
        level = "FULL" if synced else "NORMAL"
        if self._level != level:  # outside any transaction: takes effect at once, no I/O
            conn.execute(f"PRAGMA synchronous={level}")
            self._level = level

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._conn_pid != os.getpid():
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            _make_tables(conn)
            self._conn, self._conn_pid, self._level = conn, os.getpid(), ""
        return self._conn

    async def close(self) -> None:
        """Close the connection (on the worker, so no call is using it meanwhile);
        the next call reopens it. The worker thread stays for the store's life."""
        if not self._worker.started:
            return

        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None and self._conn_pid == os.getpid():
                conn.close()

        await self._worker.call(shut)

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction, taken before reading, so two processes deciding
        about the same thread see each other's writes."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = body(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    # -- runs ---------------------------------------------------------------

    async def begin(self, run_id: str, thread_id: str, request: str, ttl_s: float, holder: str = "") -> str | None:
        holder = holder or run_id

        def start(c: sqlite3.Connection) -> str | None:
            # The lease is looked at first: a free thread's run is written once,
            # already ``running``; a busy thread's is not written here at all.
            busy = _live_holder(c, thread_id, holder)
            if busy is None:
                _insert(c, run_id, thread_id, request, None, "running")
                _lease(c, thread_id, holder, ttl_s)
                _supersede(c, thread_id, run_id)
            return busy

        def record(c: sqlite3.Connection) -> str | None:
            _insert(c, run_id, thread_id, request, None)
            return _take(c, thread_id, holder, ttl_s, start=True, new=True)

        # A run that starts now is not fsync'd on its own: the graph's first act is
        # LangGraph's input checkpoint, a synced commit to this same WAL file, which
        # puts this record on disk before any node runs (and a process crash never
        # loses it). A run that must wait for its thread is recorded ``accepted``
        # with its own fsync, as it may wait long.
        def job(c: sqlite3.Connection) -> str | None:
            if self._write(c, start) is None:
                return None
            self._sync(c, True)
            return self._write(c, record)

        return await self._run(job, synced=False)

    async def accept(self, run_id: str, thread_id: str, request: str, *, idempotency_key: str | None = None) -> RunRecord | None:
        def body(c: sqlite3.Connection) -> RunRecord | None:
            if idempotency_key is not None:
                row = c.execute("SELECT * FROM slmgraph_runs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return _record(row)
            _insert(c, run_id, thread_id, request, idempotency_key)
            return None

        return await self._run(self._write, body)

    async def finish(
        self, run_id: str, thread_id: str, status: RunStatus, error: str | None = None, holder: str = "",
        *, result: str | None = None, checkpoint_id: str | None = None,
    ) -> bool:
        def body(c: sqlite3.Connection) -> bool:
            if checkpoint_id is not None and _latest_checkpoint(c, thread_id) != checkpoint_id:
                return False  # nothing written: the run is not done
            c.execute(
                "UPDATE slmgraph_runs SET status = ?, error = ?, pid = ?, host = ?, updated = ?, "
                "result = COALESCE(?, result) WHERE run_id = ?",
                (status, error, os.getpid(), HOST, time.time(), result, run_id),
            )
            c.execute("DELETE FROM slmgraph_leases WHERE thread_id = ? AND run_id = ?", (thread_id, holder or run_id))
            return True

        # A run ending ``done`` is not fsync'd on its own: its final checkpoint is
        # (LangGraph's, before this). If power fails before the next synced commit,
        # the run is found ``running`` again and recovery finishes it from that final
        # checkpoint: no node runs again, the result is the same. Every other
        # ending is fsync'd.
        return await self._run(self._write, body, synced=status != "done" or checkpoint_id is None)

    async def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        await self._run(_set_status, run_id, status, error)

    async def get(self, run_id: str) -> RunRecord | None:
        def body(c: sqlite3.Connection) -> RunRecord | None:
            row = c.execute("SELECT * FROM slmgraph_runs WHERE run_id = ?", (run_id,)).fetchone()
            return _record(row) if row else None

        return await self._run(body)

    async def runs(self, thread_id: str | None = None) -> list[RunRecord]:
        def body(c: sqlite3.Connection) -> list[RunRecord]:
            if thread_id is None:
                rows = c.execute("SELECT * FROM slmgraph_runs ORDER BY created, rowid").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM slmgraph_runs WHERE thread_id = ? ORDER BY created, rowid", (thread_id,)
                ).fetchall()
            return [_record(r) for r in rows]

        return await self._run(body)

    async def statuses(self, thread_ids: Sequence[str]) -> dict[str, RunStatus]:
        def body(c: sqlite3.Connection) -> dict[str, RunStatus]:
            out: dict[str, RunStatus] = {}
            ids = list(thread_ids)
            for i in range(0, len(ids), 500):  # under SQLite's limit of bound parameters
                chunk = ids[i : i + 500]
                rows = c.execute(
                    f"SELECT thread_id, status FROM slmgraph_runs WHERE thread_id IN ({', '.join('?' * len(chunk))}) "
                    "ORDER BY created, rowid", chunk,
                ).fetchall()
                out.update((r["thread_id"], r["status"]) for r in rows)  # oldest first: the newest wins
            return out

        return await self._run(body)

    async def by_idempotency_key(self, key: str) -> RunRecord | None:
        def body(c: sqlite3.Connection) -> RunRecord | None:
            row = c.execute("SELECT * FROM slmgraph_runs WHERE idempotency_key = ?", (key,)).fetchone()
            return _record(row) if row else None

        return await self._run(body)

    async def owner_alive(self, run: RunRecord) -> bool:
        return await self._run(_owner_alive, run)

    async def orphaned(self, *, include_failed: bool = False) -> list[RunRecord]:
        wanted = (*UNFINISHED, "failed") if include_failed else UNFINISHED

        def body(c: sqlite3.Connection) -> list[RunRecord]:
            marks = ",".join("?" * len(wanted))
            rows = c.execute(
                f"SELECT * FROM slmgraph_runs WHERE status IN ({marks}) ORDER BY created, rowid", wanted
            ).fetchall()
            runs = [_record(r) for r in rows]
            return [r for r in runs if r.status == "failed" or not _owner_alive(c, r)]

        return await self._run(body)

    async def supersede(self, thread_id: str, run_id: str) -> int:
        return await self._run(self._write, lambda c: _supersede(c, thread_id, run_id))

    # -- leases -------------------------------------------------------------

    async def acquire(self, thread_id: str, holder: str, ttl_s: float, *, start: bool = False, new: bool = False) -> str | None:
        return await self._run(self._write, lambda c: _take(c, thread_id, holder, ttl_s, start=start, new=new))

    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        def body(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE slmgraph_leases SET expires = ? WHERE thread_id = ? AND run_id = ?",
                (time.time() + ttl_s, thread_id, holder),
            )
            return cur.rowcount == 1

        return await self._run(body)

    async def release(self, thread_id: str, holder: str) -> None:
        def body(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM slmgraph_leases WHERE thread_id = ? AND run_id = ?", (thread_id, holder))

        await self._run(body)

    # -- effects ------------------------------------------------------------

    async def effect(self, thread_id: str, run_id: str, key: str) -> tuple[bool, Any]:
        def body(c: sqlite3.Connection) -> tuple[bool, Any]:
            row = c.execute(
                "SELECT result FROM slmgraph_effects WHERE thread_id = ? AND run_id = ? AND key = ?",
                (thread_id, run_id, key),
            ).fetchone()
            if row is None or row["result"] is None:
                return False, None
            return True, json.loads(row["result"])

        return await self._run(body)

    async def record_effect(self, thread_id: str, run_id: str, key: str, result_json: str) -> None:
        def body(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO slmgraph_effects VALUES (?, ?, ?, ?, ?)",
                (thread_id, run_id, key, result_json, time.time()),
            )

        await self._run(body)
