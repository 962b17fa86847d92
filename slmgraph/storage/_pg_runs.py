"""The durable runs table, thread leases and side-effect log in PostgreSQL.

The same three tables as the SQLite store (see :mod:`slmgraph.graphs._runs`), in
the database that holds LangGraph's checkpoints, so every process and machine that
shares the DSN shares the guarantees: a run is recorded before it starts, one run
at a time holds a thread, a declared effect runs once, and a dead owner's run is
found by :meth:`orphaned`.

Decisions about one thread are serialised by a transaction-scoped advisory lock on
the thread id (``pg_advisory_xact_lock``), the PostgreSQL counterpart of SQLite's
``BEGIN IMMEDIATE``. An owner on this host is judged by its pid; an owner on another
host by its lease, which it renews every third of its lifetime.

The two writes every run makes, :meth:`PostgresRunStore.begin` and
:meth:`PostgresRunStore.finish`, send their statements in one batch (psycopg's
pipeline mode): one round trip to the server instead of one per statement. Only
when the thread is held, or has interrupted runs, does ``begin`` ask again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .._errors import CheckpointError
from ..graphs._runs import HOST, UNFINISHED, RunRecord, RunStatus, RunStore, pid_alive, run_of
from ._pg import redact_dsn

__all__ = ["PostgresRunStore", "SCHEMA"]

_FIELDS = ("run_id", "thread_id", "request", "status", "error", "pid", "host", "created", "updated",
           "idempotency_key", "result")  # fmt: skip
_COLS = ", ".join(_FIELDS)
_INSERT = f"INSERT INTO slmgraph_runs ({_COLS}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS slmgraph_runs (run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, "
    "request TEXT NOT NULL, status TEXT NOT NULL, error TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL, "
    "created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, idempotency_key TEXT, result TEXT, "
    "seq BIGSERIAL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS slmgraph_runs_key ON slmgraph_runs (idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS slmgraph_runs_thread ON slmgraph_runs (thread_id, created, seq)",
    "CREATE INDEX IF NOT EXISTS slmgraph_runs_status ON slmgraph_runs (status)",
    "CREATE TABLE IF NOT EXISTS slmgraph_leases (thread_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, "
    "pid INTEGER NOT NULL, host TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_effects (thread_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "key TEXT NOT NULL, result TEXT, created DOUBLE PRECISION NOT NULL, PRIMARY KEY (thread_id, run_id, key))",
)


_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
# The lease, unless a live run holds it: (thread, holder, pid, host, expires, now, holder).
# A same-host holder whose process died is found by the slower path (its pid is checked here).
_TAKE_FREE = (
    "INSERT INTO slmgraph_leases (thread_id, run_id, pid, host, expires) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (thread_id) DO UPDATE SET run_id = EXCLUDED.run_id, pid = EXCLUDED.pid, "
    "host = EXCLUDED.host, expires = EXCLUDED.expires "
    "WHERE slmgraph_leases.expires <= %s OR slmgraph_leases.run_id = %s RETURNING run_id"
)
_START_IF_HELD = (
    "UPDATE slmgraph_runs SET status = 'running', pid = %s, host = %s, updated = %s "
    "WHERE run_id = %s AND status IN ('accepted', 'running', 'failed') "
    "AND EXISTS (SELECT 1 FROM slmgraph_leases l WHERE l.thread_id = %s AND l.run_id = %s)"
)
_OPEN_OTHERS = (
    f"SELECT {_COLS} FROM slmgraph_runs WHERE thread_id = %s AND run_id != %s "
    "AND status IN ('accepted', 'running', 'failed')"
)


def _record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(**{k: row[k] for k in _FIELDS})


class PostgresRunStore(RunStore):
    """The runs store on a ``psycopg_pool.AsyncConnectionPool`` (autocommit, dict rows).

    Every method is a coroutine on the pool (async psycopg: nothing blocks the
    loop), and each write is one committed statement or transaction. A database
    failure becomes :class:`~slmgraph.CheckpointError`. The pool belongs to
    whoever opened it; :meth:`close` leaves it open.
    """

    durable = True

    def __init__(self, pool: Any, dsn: str = "") -> None:
        super().__init__()
        self.pool = pool
        self.dsn = redact_dsn(dsn) if dsn else "PostgreSQL"
        self._ready = False

    async def close(self) -> None:  # the pool is closed by its owner
        pass

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        import psycopg

        try:
            async with self.pool.connection() as conn:
                if not self._ready:  # a saver opened by the caller: make sure the tables exist
                    for statement in SCHEMA:
                        await conn.execute(statement)
                    self._ready = True
                yield conn
        except (psycopg.Error, OSError) as exc:
            raise CheckpointError("", f"the runs table in {self.dsn}: {type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _tx(self, thread_id: str) -> AsyncIterator[Any]:
        """One transaction holding the thread's advisory lock until it commits."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(_LOCK, (thread_id,))
            yield conn

    async def _fetch(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _exec(self, sql: str, params: tuple = ()) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    @staticmethod
    async def _insert(c: Any, run_id: str, thread_id: str, request: str, key: str | None) -> None:
        now = time.time()
        await c.execute(_INSERT, (run_id, thread_id, request, "accepted", None, os.getpid(), HOST, now, now, key, None))

    # -- runs ---------------------------------------------------------------

    async def begin(self, run_id: str, thread_id: str, request: str, ttl_s: float, holder: str = "") -> str | None:
        holder = holder or run_id
        async with self._conn() as c, _batched(c), c.transaction():
            now = time.time()
            await c.execute(_LOCK, (thread_id,))
            await self._insert(c, run_id, thread_id, request, None)
            # Take the lease if it is free, expired or ours; mark the run running if taken.
            took = await c.execute(_TAKE_FREE, (thread_id, holder, os.getpid(), HOST, now + ttl_s, now, holder))
            await c.execute(_START_IF_HELD, (os.getpid(), HOST, now, run_id, thread_id, holder))
            others = await c.execute(_OPEN_OTHERS, (thread_id, run_id))
            if await took.fetchone() is None:  # held: by a live run, or by a dead process on this host
                return await self._take(c, thread_id, holder, ttl_s, start=True, new=True)
            stale = [r for r in map(_record, await others.fetchall()) if r.status == "failed" or not await _owner_alive(c, r)]
            await _mark_superseded(c, stale, run_id)
            return None

    async def accept(self, run_id: str, thread_id: str, request: str, *, idempotency_key: str | None = None) -> RunRecord | None:
        # The key's own advisory lock makes "look up, else insert" atomic across processes.
        async with self._tx(f"key:{idempotency_key}" if idempotency_key else thread_id) as c:
            if idempotency_key is not None:
                cur = await c.execute(f"SELECT {_COLS} FROM slmgraph_runs WHERE idempotency_key = %s", (idempotency_key,))
                row = await cur.fetchone()
                if row is not None:
                    return _record(row)
            await self._insert(c, run_id, thread_id, request, idempotency_key)
            return None

    async def finish(
        self, run_id: str, thread_id: str, status: RunStatus, error: str | None = None, holder: str = "",
        *, result: str | None = None,
    ) -> None:
        async with self._conn() as c, _batched(c), c.transaction():
            await c.execute(_LOCK, (thread_id,))
            await c.execute(
                "UPDATE slmgraph_runs SET status = %s, error = %s, pid = %s, host = %s, updated = %s, "
                "result = COALESCE(%s, result) WHERE run_id = %s",
                (status, error, os.getpid(), HOST, time.time(), result, run_id),
            )
            await c.execute("DELETE FROM slmgraph_leases WHERE thread_id = %s AND run_id = %s", (thread_id, holder or run_id))

    async def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        await self._exec(
            "UPDATE slmgraph_runs SET status = %s, error = %s, pid = %s, host = %s, updated = %s WHERE run_id = %s",
            (status, error, os.getpid(), HOST, time.time(), run_id),
        )

    async def get(self, run_id: str) -> RunRecord | None:
        rows = await self._fetch(f"SELECT {_COLS} FROM slmgraph_runs WHERE run_id = %s", (run_id,))
        return _record(rows[0]) if rows else None

    async def runs(self, thread_id: str | None = None) -> list[RunRecord]:
        if thread_id is None:
            rows = await self._fetch(f"SELECT {_COLS} FROM slmgraph_runs ORDER BY created, seq")
        else:
            rows = await self._fetch(
                f"SELECT {_COLS} FROM slmgraph_runs WHERE thread_id = %s ORDER BY created, seq", (thread_id,)
            )
        return [_record(r) for r in rows]

    async def statuses(self, thread_ids: Sequence[str]) -> dict[str, RunStatus]:
        rows = await self._fetch(
            "SELECT DISTINCT ON (thread_id) thread_id, status FROM slmgraph_runs WHERE thread_id = ANY(%s) "
            "ORDER BY thread_id, created DESC, seq DESC",
            (list(thread_ids),),
        )
        return {r["thread_id"]: r["status"] for r in rows}

    async def latest_open(self, thread_id: str) -> RunRecord | None:
        rows = await self._fetch(
            f"SELECT {_COLS} FROM slmgraph_runs WHERE thread_id = %s AND status IN ('accepted', 'running', 'failed') "
            "ORDER BY created DESC, seq DESC LIMIT 1",
            (thread_id,),
        )
        return _record(rows[0]) if rows else None

    async def by_idempotency_key(self, key: str) -> RunRecord | None:
        rows = await self._fetch(f"SELECT {_COLS} FROM slmgraph_runs WHERE idempotency_key = %s", (key,))
        return _record(rows[0]) if rows else None

    async def owner_alive(self, run: RunRecord) -> bool:
        async with self._conn() as c:
            return await _owner_alive(c, run)

    async def orphaned(self, *, include_failed: bool = False) -> list[RunRecord]:
        wanted = [*UNFINISHED, "failed"] if include_failed else list(UNFINISHED)
        out = []
        async with self._conn() as c:
            cur = await c.execute(
                f"SELECT {_COLS} FROM slmgraph_runs WHERE status = ANY(%s) ORDER BY created, seq", (wanted,)
            )
            for run in map(_record, await cur.fetchall()):
                if run.status == "failed" or not await _owner_alive(c, run):
                    out.append(run)
        return out

    async def supersede(self, thread_id: str, run_id: str) -> int:
        async with self._tx(thread_id) as c:
            return await _supersede(c, thread_id, run_id)

    # -- leases -------------------------------------------------------------

    async def acquire(self, thread_id: str, holder: str, ttl_s: float, *, start: bool = False, new: bool = False) -> str | None:
        async with self._tx(thread_id) as c:
            return await self._take(c, thread_id, holder, ttl_s, start=start, new=new)

    @staticmethod
    async def _take(c: Any, thread_id: str, holder: str, ttl_s: float, *, start: bool, new: bool) -> str | None:
        cur = await c.execute("SELECT run_id, pid, host, expires FROM slmgraph_leases WHERE thread_id = %s", (thread_id,))
        row = await cur.fetchone()
        if row is not None and row["run_id"] != holder and not _stale(row):
            return str(row["run_id"])
        await c.execute(
            "INSERT INTO slmgraph_leases (thread_id, run_id, pid, host, expires) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (thread_id) DO UPDATE SET run_id = EXCLUDED.run_id, pid = EXCLUDED.pid, "
            "host = EXCLUDED.host, expires = EXCLUDED.expires",
            (thread_id, holder, os.getpid(), HOST, time.time() + ttl_s),
        )
        run_id = run_of(holder)
        if new:
            await _supersede(c, thread_id, run_id)
        if start:
            await c.execute(
                "UPDATE slmgraph_runs SET status = 'running', pid = %s, host = %s, updated = %s "
                "WHERE run_id = %s AND status IN ('accepted', 'running', 'failed')",
                (os.getpid(), HOST, time.time(), run_id),
            )
        return None

    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        n = await self._exec(
            "UPDATE slmgraph_leases SET expires = %s WHERE thread_id = %s AND run_id = %s",
            (time.time() + ttl_s, thread_id, holder),
        )
        return n == 1

    async def release(self, thread_id: str, holder: str) -> None:
        await self._exec("DELETE FROM slmgraph_leases WHERE thread_id = %s AND run_id = %s", (thread_id, holder))

    # -- effects ------------------------------------------------------------

    async def effect(self, thread_id: str, run_id: str, key: str) -> tuple[bool, Any]:
        rows = await self._fetch(
            "SELECT result FROM slmgraph_effects WHERE thread_id = %s AND run_id = %s AND key = %s",
            (thread_id, run_id, key),
        )
        if not rows or rows[0]["result"] is None:
            return False, None
        return True, json.loads(rows[0]["result"])

    async def record_effect(self, thread_id: str, run_id: str, key: str, result_json: str) -> None:
        await self._exec(
            "INSERT INTO slmgraph_effects (thread_id, run_id, key, result, created) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (thread_id, run_id, key) DO UPDATE SET result = EXCLUDED.result, created = EXCLUDED.created",
            (thread_id, run_id, key, result_json, time.time()),
        )


async def _owner_alive(c: Any, run: RunRecord) -> bool:
    if run.host == HOST:
        return pid_alive(run.pid)
    cur = await c.execute("SELECT run_id, expires FROM slmgraph_leases WHERE thread_id = %s", (run.thread_id,))
    lease = await cur.fetchone()
    return bool(lease) and run_of(lease["run_id"]) == run.run_id and lease["expires"] > time.time()


async def _supersede(c: Any, thread_id: str, run_id: str) -> int:
    cur = await c.execute(_OPEN_OTHERS, (thread_id, run_id))
    stale = [r for r in map(_record, await cur.fetchall()) if r.status == "failed" or not await _owner_alive(c, r)]
    await _mark_superseded(c, stale, run_id)
    return len(stale)


async def _mark_superseded(c: Any, stale: list[RunRecord], run_id: str) -> None:
    for run in stale:
        await c.execute(
            "UPDATE slmgraph_runs SET status = 'superseded', error = %s, updated = %s WHERE run_id = %s",
            (f"a later run ({run_id}) started on the thread", time.time(), run.run_id),
        )


def _batched(conn: Any) -> Any:
    """Pipeline mode on ``conn`` (statements sent without waiting for each result),
    where the client library supports it."""
    import psycopg

    return conn.pipeline() if psycopg.AsyncPipeline.is_supported() else contextlib.nullcontext()


def _stale(lease: dict[str, Any]) -> bool:
    if lease["expires"] <= time.time():
        return True
    return lease["host"] == HOST and not pid_alive(int(lease["pid"]))
