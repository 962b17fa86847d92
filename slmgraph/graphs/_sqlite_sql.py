"""The runs tables in SQLite: their schema and the statements the runs store runs.

Every function here takes the connection and runs on the store's thread (its own,
or the saver's it borrows), inside the transaction the caller opened.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ._runs import HOST, UNFINISHED, RunRecord, RunStatus, pid_alive, run_of

_COLUMNS = ("run_id", "thread_id", "request", "status", "error", "pid", "host", "created", "updated",
            "idempotency_key", "result")  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slmgraph_runs (
    run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, request TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, idempotency_key TEXT, result TEXT);
CREATE INDEX IF NOT EXISTS slmgraph_runs_thread ON slmgraph_runs (thread_id, created);
CREATE INDEX IF NOT EXISTS slmgraph_runs_status ON slmgraph_runs (status);
CREATE TABLE IF NOT EXISTS slmgraph_leases (
    thread_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slmgraph_effects (
    thread_id TEXT NOT NULL, run_id TEXT NOT NULL, key TEXT NOT NULL,
    result TEXT, created REAL NOT NULL, PRIMARY KEY (thread_id, run_id, key));
"""
# Files written before the idempotency columns existed get them added.
_KEY_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS slmgraph_runs_key ON slmgraph_runs (idempotency_key) "
              "WHERE idempotency_key IS NOT NULL")  # fmt: skip

_INSERT = f"INSERT INTO slmgraph_runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(**{k: row[k] for k in _COLUMNS})


def _make_tables(conn: sqlite3.Connection) -> None:
    """The runs tables, made if missing (and older files brought up to date)."""
    conn.executescript(_SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(slmgraph_runs)")}
    for column in ("idempotency_key", "result"):
        if column not in have:
            conn.execute(f"ALTER TABLE slmgraph_runs ADD COLUMN {column} TEXT")
    conn.execute(_KEY_INDEX)


def _insert(
    c: sqlite3.Connection, run_id: str, thread_id: str, request: str, key: str | None, status: RunStatus = "accepted",
) -> None:
    now = time.time()
    c.execute(_INSERT, (run_id, thread_id, request, status, None, os.getpid(), HOST, now, now, key, None))


def _latest_checkpoint(c: sqlite3.Connection, thread_id: str) -> str | None:
    """The id of the thread's newest checkpoint in LangGraph's SQLite table (in this
    file, written by LangGraph's saver on its own connection)."""
    row = c.execute(
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
        "ORDER BY checkpoint_id DESC LIMIT 1",
        (thread_id,),
    ).fetchone()
    return None if row is None else str(row["checkpoint_id"])


def _set_status(c: sqlite3.Connection, run_id: str, status: RunStatus, error: str | None) -> None:
    c.execute(
        "UPDATE slmgraph_runs SET status = ?, error = ?, pid = ?, host = ?, updated = ? WHERE run_id = ?",
        (status, error, os.getpid(), HOST, time.time(), run_id),
    )


def _owner_alive(c: sqlite3.Connection, run: RunRecord) -> bool:
    if run.host == HOST:
        return pid_alive(run.pid)
    lease = c.execute("SELECT * FROM slmgraph_leases WHERE thread_id = ?", (run.thread_id,)).fetchone()
    return bool(lease) and run_of(lease["run_id"]) == run.run_id and lease["expires"] > time.time()


def _supersede(c: sqlite3.Connection, thread_id: str, run_id: str) -> int:
    rows = c.execute(
        "SELECT * FROM slmgraph_runs WHERE thread_id = ? AND run_id != ? AND status IN (?, ?, 'failed')",
        (thread_id, run_id, *UNFINISHED),
    ).fetchall()
    stale = [r for r in map(_record, rows) if r.status == "failed" or not _owner_alive(c, r)]
    for run in stale:
        c.execute(
            "UPDATE slmgraph_runs SET status = 'superseded', error = ?, updated = ? WHERE run_id = ?",
            (f"a later run ({run_id}) started on the thread", time.time(), run.run_id),
        )
    return len(stale)


def _live_holder(c: sqlite3.Connection, thread_id: str, holder: str) -> str | None:
    """The live holder of the thread's lease other than ``holder``, if any."""
    row = c.execute("SELECT * FROM slmgraph_leases WHERE thread_id = ?", (thread_id,)).fetchone()
    if row is not None and row["run_id"] != holder and not _stale(row):
        return str(row["run_id"])
    return None


def _lease(c: sqlite3.Connection, thread_id: str, holder: str, ttl_s: float) -> None:
    c.execute(
        "INSERT OR REPLACE INTO slmgraph_leases VALUES (?, ?, ?, ?, ?)",
        (thread_id, holder, os.getpid(), HOST, time.time() + ttl_s),
    )


def _take(c: sqlite3.Connection, thread_id: str, holder: str, ttl_s: float, *, start: bool, new: bool) -> str | None:
    busy = _live_holder(c, thread_id, holder)
    if busy is not None:
        return busy
    _lease(c, thread_id, holder, ttl_s)
    run_id = run_of(holder)
    if new:
        _supersede(c, thread_id, run_id)
    if start:
        c.execute(
            "UPDATE slmgraph_runs SET status = 'running', pid = ?, host = ?, updated = ? "
            "WHERE run_id = ? AND status IN ('accepted', 'running', 'failed')",
            (os.getpid(), HOST, time.time(), run_id),
        )
    return None


def _stale(lease: sqlite3.Row) -> bool:
    if lease["expires"] <= time.time():
        return True
    return lease["host"] == HOST and not pid_alive(int(lease["pid"]))
