"""The learning store in one SQLite file (the default).

Every operation runs in a worker thread (``asyncio.to_thread``) on that thread's
own connection, so the event loop never waits on the disk and no lock is shared
with it. Promotion and rollback are one ``BEGIN IMMEDIATE`` transaction each, so
two processes sharing the file cannot interleave them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._errors import ConfigError
from ._errors import UnknownVersionError
from ._records import LearningRecord, RecordKind, ShadowResult
from ._store import (
    STORE_FORMAT, Event, LearningStore, Snapshot, Version, check_record, decode_records, decode_snapshot, newer_format,
)

__all__ = ["SqliteLearningStore", "DEFAULT_LEARNING_STORE"]


#: Where the learning loop keeps its data unless told otherwise.
DEFAULT_LEARNING_STORE = Path(".slmgraph") / "learning.sqlite"

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS learn_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learn_records(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, created_at REAL NOT NULL,
    kind TEXT NOT NULL, skill TEXT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS learn_records_skill ON learn_records(skill, created_at);
CREATE TABLE IF NOT EXISTS learn_stream(
    minute INTEGER NOT NULL, skill TEXT NOT NULL, version TEXT NOT NULL, runs INTEGER NOT NULL,
    escalations INTEGER NOT NULL, cost_usd REAL NOT NULL, PRIMARY KEY (minute, skill, version));
CREATE TABLE IF NOT EXISTS learn_snapshots(
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, target TEXT NOT NULL, created_at REAL NOT NULL,
    n_train INTEGER NOT NULL, n_holdout INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learn_versions(
    id TEXT PRIMARY KEY, target TEXT NOT NULL, created_at REAL NOT NULL, strategy TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learn_current(target TEXT PRIMARY KEY, stack TEXT NOT NULL, changed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS learn_shadow_target(
    target TEXT PRIMARY KEY, version TEXT NOT NULL, sample REAL NOT NULL, changed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS learn_shadow(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, candidate TEXT NOT NULL, target TEXT NOT NULL,
    at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS learn_shadow_candidate ON learn_shadow(candidate, at);
CREATE TABLE IF NOT EXISTS learn_events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    version TEXT, detail TEXT NOT NULL);
"""


class SqliteLearningStore(LearningStore):
    """:class:`LearningStore` in a SQLite file.

    Args:
        path: the file (created with its folder); default ``.slmgraph/learning.sqlite``.

    Raises:
        ConfigError: the file cannot be opened or created.
        SchemaMismatchError: the file was written by a newer slmgraph.
    """

    def __init__(self, path: str | Path = DEFAULT_LEARNING_STORE) -> None:
        self.path = Path(path)
        self.where = repr(str(self.path))
        self.artifacts = self.path.parent
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()  # only ever taken in worker threads
        self._ready = False

    # -- plumbing -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=30000")
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError("learning.store", f"cannot open the learning store {str(self.path)!r} ({exc}); choose a writable path") from None
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        if not self._ready:
            self._setup(conn)
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        with self._guard:
            if self._ready:
                return
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO learn_meta VALUES ('format', ?)", (str(STORE_FORMAT),))
            found = int(conn.execute("SELECT value FROM learn_meta WHERE key='format'").fetchone()[0])
            if found > STORE_FORMAT:
                raise newer_format(self.where, found)
            self._ready = True

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            return fn(self._conn())
        return await asyncio.to_thread(work)

    @staticmethod
    def _tx(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    async def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._local = threading.local()

    # -- records --------------------------------------------------------------------
    async def add(self, record: LearningRecord) -> bool:
        body = check_record(record)

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO learn_records(key, created_at, kind, skill, body) VALUES (?,?,?,?,?)",
                (record.key, record.created_at, record.kind, record.skill, body),
            )
            return cur.rowcount == 1
        return await self._run(work)

    async def records(
        self, *, skill: str | None = None, kinds: Sequence[RecordKind] | None = None, since: float | None = None,
    ) -> list[LearningRecord]:
        sql, args = "SELECT seq, body FROM learn_records WHERE 1=1", []
        if skill is not None:
            sql += " AND skill = ?"
            args.append(skill)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        if since is not None:
            sql += " AND created_at > ?"
            args.append(since)
        sql += " ORDER BY created_at, seq"
        return decode_records(await self._run(lambda c: c.execute(sql, args).fetchall()))

    async def count(self, *, skill: str | None = None) -> dict[str, int]:
        sql = "SELECT kind, COUNT(*) FROM learn_records" + (" WHERE skill = ?" if skill is not None else "") + " GROUP BY kind"
        rows = await self._run(lambda c: c.execute(sql, (skill,) if skill is not None else ()).fetchall())
        return {k: n for k, n in rows}

    async def add_outcome(self, skill: str, version: str | None, escalated: bool, cost_usd: float, at: float) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO learn_stream VALUES (?,?,?,1,?,?) ON CONFLICT(minute, skill, version) DO UPDATE SET "
            "runs = runs + 1, escalations = escalations + excluded.escalations, cost_usd = cost_usd + excluded.cost_usd",
            (int(at // 60), skill, version or "", int(escalated), cost_usd),
        ))

    async def stream(self, skill: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT minute, skill, version, runs, escalations, cost_usd FROM learn_stream"
        sql += (" WHERE skill = ?" if skill else "") + " ORDER BY minute, skill, version"
        rows = await self._run(lambda c: c.execute(sql, (skill,) if skill else ()).fetchall())
        keys = ("minute", "skill", "version", "runs", "escalations", "cost_usd")
        return [dict(zip(keys, r)) for r in rows]

    # -- snapshots ------------------------------------------------------------------
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        body = snapshot.model_dump_json()
        await self._run(lambda c: c.execute(
            "INSERT OR IGNORE INTO learn_snapshots VALUES (?,?,?,?,?,?,?)",
            (snapshot.id, snapshot.content_hash, snapshot.target, snapshot.created_at,
             len(snapshot.train), len(snapshot.holdout), body),
        ))

    async def snapshot(self, snapshot_id: str) -> Snapshot:
        rows = await self._run(lambda c: c.execute(
            "SELECT id, body FROM learn_snapshots WHERE id LIKE ? ORDER BY created_at DESC", (snapshot_id + "%",)
        ).fetchall())
        if len(rows) != 1:
            known = [s["id"] for s in await self.snapshots()]
            if rows:
                raise UnknownVersionError("unique snapshot for the prefix", snapshot_id, [r[0] for r in rows])
            raise UnknownVersionError("snapshot", snapshot_id, known)
        return decode_snapshot(*rows[0])

    async def snapshots(self, target: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, target, created_at, n_train, n_holdout FROM learn_snapshots"
        sql += (" WHERE target = ?" if target else "") + " ORDER BY created_at DESC"
        rows = await self._run(lambda c: c.execute(sql, (target,) if target else ()).fetchall())
        return [dict(zip(("id", "target", "created_at", "train", "holdout"), r)) for r in rows]

    # -- versions -------------------------------------------------------------------
    async def save_version(self, version: Version) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO learn_versions VALUES (?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            (version.id, version.target, version.created_at, version.strategy, version.model_dump_json()),
        ))

    async def version(self, version_id: str) -> Version:
        row = await self._run(lambda c: c.execute("SELECT body FROM learn_versions WHERE id = ?", (version_id,)).fetchone())
        if row is None:
            raise UnknownVersionError("version", version_id, [v.id for v in await self.versions()])
        return Version.model_validate_json(row[0])

    async def versions(self, target: str | None = None) -> list[Version]:
        sql = "SELECT body FROM learn_versions" + (" WHERE target = ?" if target else "") + " ORDER BY created_at DESC"
        rows = await self._run(lambda c: c.execute(sql, (target,) if target else ()).fetchall())
        return [Version.model_validate_json(r[0]) for r in rows]

    @staticmethod
    def _stack(conn: sqlite3.Connection, target: str) -> list[str]:
        row = conn.execute("SELECT stack FROM learn_current WHERE target = ?", (target,)).fetchone()
        return json.loads(row[0]) if row else []

    async def current(self, target: str) -> str | None:
        stack = await self._run(lambda c: self._stack(c, target))
        return stack[-1] if stack else None

    async def history(self, target: str) -> list[str]:
        return await self._run(lambda c: self._stack(c, target))

    async def promote(self, target: str, version_id: str, reason: str = "", detail: dict[str, Any] | None = None) -> None:
        await self.version(version_id)  # must exist

        def work(conn: sqlite3.Connection) -> None:
            def tx() -> None:
                stack = self._stack(conn, target)
                if stack and stack[-1] == version_id:
                    return
                stack.append(version_id)
                self._write(conn, target, stack, "promote", version_id, {"reason": reason, **(detail or {})})
            self._tx(conn, tx)
        await self._run(work)

    async def rollback(
        self, target: str, reason: str, detail: dict[str, Any] | None = None, *, only_if: str | None = None,
    ) -> str | None:
        def work(conn: sqlite3.Connection) -> str | None:
            def tx() -> str | None:
                stack = self._stack(conn, target)
                if not stack or (only_if is not None and stack[-1] != only_if):
                    return stack[-1] if stack else None
                left = stack.pop()
                now = stack[-1] if stack else None
                self._write(conn, target, stack, "rollback", now, {"reason": reason, "from": left, **(detail or {})})
                return now
            return self._tx(conn, tx)
        return await self._run(work)

    @staticmethod
    def _write(conn: sqlite3.Connection, target: str, stack: list[str], kind: str, version: str | None, detail: dict) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO learn_current VALUES (?,?,?) ON CONFLICT(target) DO UPDATE SET stack = excluded.stack, "
            "changed_at = excluded.changed_at", (target, json.dumps(stack), now),
        )
        conn.execute("INSERT INTO learn_events(at, target, kind, version, detail) VALUES (?,?,?,?,?)",
                     (now, target, kind, version, json.dumps(detail, default=str)))

    async def log(self, event: Event) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO learn_events(at, target, kind, version, detail) VALUES (?,?,?,?,?)",
            (event.at, event.target, event.kind, event.version, json.dumps(event.detail, default=str)),
        ))

    async def events(self, target: str | None = None, limit: int = 100) -> list[Event]:
        sql = "SELECT seq, at, target, kind, version, detail FROM learn_events"
        sql += (" WHERE target = ?" if target else "") + " ORDER BY seq DESC LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, ((target,) if target else ()) + (limit,)).fetchall())
        return [Event(seq=s, at=a, target=t, kind=k, version=v, detail=json.loads(d)) for s, a, t, k, v, d in reversed(rows)]

    # -- live shadow ----------------------------------------------------------------
    async def set_shadow(self, target: str, version_id: str | None, sample: float = 0.1, reason: str = "") -> None:
        if version_id is not None:
            await self.version(version_id)  # must exist

        def work(conn: sqlite3.Connection) -> None:
            def tx() -> None:
                if version_id is None:
                    conn.execute("DELETE FROM learn_shadow_target WHERE target = ?", (target,))
                else:
                    conn.execute("INSERT INTO learn_shadow_target VALUES (?,?,?,?) ON CONFLICT(target) DO UPDATE SET "
                                 "version = excluded.version, sample = excluded.sample, changed_at = excluded.changed_at",
                                 (target, version_id, sample, time.time()))
                conn.execute("INSERT INTO learn_events(at, target, kind, version, detail) VALUES (?,?,?,?,?)",
                             (time.time(), target, "shadow", version_id, json.dumps({"reason": reason, "sample": sample})))
            self._tx(conn, tx)
        await self._run(work)

    async def shadow_of(self, target: str) -> tuple[str, float] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT version, sample FROM learn_shadow_target WHERE target = ?", (target,)).fetchone())
        return (row[0], float(row[1])) if row else None

    async def add_shadow(self, result: ShadowResult) -> bool:
        cur = await self._run(lambda c: c.execute(
            "INSERT OR IGNORE INTO learn_shadow(key, candidate, target, at, body) VALUES (?,?,?,?,?)",
            (result.key, result.candidate, result.target, result.at, result.model_dump_json())))
        return cur.rowcount == 1

    async def shadow_results(self, version_id: str) -> list[ShadowResult]:
        rows = await self._run(lambda c: c.execute(
            "SELECT body FROM learn_shadow WHERE candidate = ? ORDER BY at, seq", (version_id,)).fetchall())
        return [ShadowResult.model_validate_json(r[0]) for r in rows]

    def __repr__(self) -> str:
        return f"SqliteLearningStore({str(self.path)!r})"
