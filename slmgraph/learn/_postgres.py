"""The learning store in PostgreSQL, where the graph's state lives there.

The same tables as :class:`~slmgraph.learn.SqliteLearningStore` (prefixed
``slmgraph_learn_``), in the database the checkpoint DSN names, on
:func:`slmgraph.storage.pg_pool` (async psycopg: nothing blocks the event loop).
Every process sharing the DSN shares the guarantees:

- a record's dedup key is a unique column, so a retried run never writes two;
- snapshots are immutable (``ON CONFLICT DO NOTHING``) and checked against their
  content hash on every read;
- promotion and rollback are one transaction each under a transaction-scoped
  advisory lock on the target, the counterpart of SQLite's ``BEGIN IMMEDIATE``,
  and write the pointer and the registry's log together.

``slmgraph prune`` removes checkpoints and runs only; it never touches these tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from .._errors import StorageError
from ._errors import UnknownVersionError
from ._records import LearningRecord, RecordKind, ShadowResult
from ._store import (
    STORE_FORMAT, Event, LearningStore, Snapshot, Version, check_record, decode_records, decode_snapshot, newer_format,
)

__all__ = ["PostgresLearningStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_records (seq BIGSERIAL PRIMARY KEY, key TEXT UNIQUE NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, skill TEXT, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS slmgraph_learn_records_skill ON slmgraph_learn_records (skill, created_at)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_stream (minute BIGINT NOT NULL, skill TEXT NOT NULL, "
    "version TEXT NOT NULL, runs BIGINT NOT NULL, escalations BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, "
    "PRIMARY KEY (minute, skill, version))",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_snapshots (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, "
    "target TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, n_train INTEGER NOT NULL, "
    "n_holdout INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_versions (id TEXT PRIMARY KEY, target TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, strategy TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_current (target TEXT PRIMARY KEY, stack TEXT NOT NULL, "
    "changed_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_shadow_target (target TEXT PRIMARY KEY, version TEXT NOT NULL, "
    "sample DOUBLE PRECISION NOT NULL, changed_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_shadow (seq BIGSERIAL PRIMARY KEY, key TEXT UNIQUE NOT NULL, "
    "candidate TEXT NOT NULL, target TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS slmgraph_learn_shadow_candidate ON slmgraph_learn_shadow (candidate, at)",
    "CREATE TABLE IF NOT EXISTS slmgraph_learn_events (seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
    "target TEXT NOT NULL, kind TEXT NOT NULL, version TEXT, detail TEXT NOT NULL)",
)

#: Advisory-lock namespaces (``pg_advisory_xact_lock(ns, hashtext(...))``).
_LOCK_SETUP, _LOCK_TARGET = 0x51E4, 0x51E5


class PostgresLearningStore(LearningStore):
    """:class:`LearningStore` in a PostgreSQL database.

    The connection pool opens on first use, one per event loop (a pool belongs to
    the loop it was opened on), and :meth:`close` closes this loop's pool.

    Args:
        dsn: ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (the checkpoint's DSN).
        artifacts: the folder for files a version needs (LoRA adapters);
            default ``.slmgraph``.
        max_size: connections per pool.

    Raises:
        ConfigError: a malformed DSN (on first use).
        StorageUnavailableError, StorageAuthError, StorageNotFoundError: the
            database cannot be used.
        MissingDependencyError: without the ``slmgraph[postgres]`` extra.
        SchemaMismatchError: the tables were written by a newer slmgraph.
    """

    def __init__(self, dsn: str, *, artifacts: str | Path = ".slmgraph", max_size: int = 4) -> None:
        from ..storage._pg import redact_dsn

        self.dsn = dsn
        self.where = redact_dsn(dsn)
        self.artifacts = Path(artifacts)
        self.max_size = max_size
        self._pools: dict[asyncio.AbstractEventLoop, tuple[contextlib.AsyncExitStack, Any]] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._ready = False

    # -- plumbing -------------------------------------------------------------------
    async def _pool(self) -> Any:
        loop = asyncio.get_running_loop()
        for old in [lp for lp in self._pools if lp.is_closed()]:  # a finished asyncio.run()
            del self._pools[old]
            self._opening.pop(old, None)
        if loop in self._pools:
            return self._pools[loop][1]
        async with self._opening.setdefault(loop, asyncio.Lock()):
            if loop not in self._pools:
                from ..storage import pg_pool

                stack = contextlib.AsyncExitStack()
                pool = await stack.enter_async_context(pg_pool(self.dsn, max_size=self.max_size))
                try:
                    if not self._ready:
                        await self._setup(pool)
                except BaseException:
                    await stack.aclose()
                    raise
                self._pools[loop] = (stack, pool)
        return self._pools[loop][1]

    async def _setup(self, pool: Any) -> None:
        async with pool.connection() as conn, conn.transaction():
            # Two processes creating the tables at once would race on the catalogue.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SETUP,))
            for stmt in _SCHEMA:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO slmgraph_learn_meta VALUES ('format', %s) ON CONFLICT DO NOTHING", (str(STORE_FORMAT),))
            row = await (await conn.execute("SELECT value FROM slmgraph_learn_meta WHERE key = 'format'")).fetchone()
        if int(row["value"]) > STORE_FORMAT:
            raise newer_format(self.where, int(row["value"]))
        self._ready = True

    @contextlib.asynccontextmanager
    async def _conn(self, *, tx: bool = False) -> AsyncIterator[Any]:
        import psycopg

        from ..storage._pg import storage_error

        pool = await self._pool()
        try:
            async with pool.connection() as conn:
                if tx:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.OperationalError as exc:
            raise storage_error(self.dsn, exc) from None
        except psycopg.Error as exc:
            raise StorageError(self.where, f"the learning store failed: {exc}") from None

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await (await conn.execute(sql, args)).fetchall()

    async def _exec(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._conn() as conn:
            return (await conn.execute(sql, args)).rowcount

    async def close(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - close() is awaited
            return
        entry = self._pools.pop(loop, None)
        self._opening.pop(loop, None)
        if entry is not None:
            await entry[0].aclose()

    # -- records --------------------------------------------------------------------
    async def add(self, record: LearningRecord) -> bool:
        body = check_record(record)
        n = await self._exec(
            "INSERT INTO slmgraph_learn_records (key, created_at, kind, skill, body) VALUES (%s,%s,%s,%s,%s) "
            "ON CONFLICT (key) DO NOTHING", (record.key, record.created_at, record.kind, record.skill, body),
        )
        return n == 1

    async def records(
        self, *, skill: str | None = None, kinds: Sequence[RecordKind] | None = None, since: float | None = None,
    ) -> list[LearningRecord]:
        sql, args = "SELECT seq, body FROM slmgraph_learn_records WHERE TRUE", []
        if skill is not None:
            sql += " AND skill = %s"
            args.append(skill)
        if kinds:
            sql += " AND kind = ANY(%s)"
            args.append(list(kinds))
        if since is not None:
            sql += " AND created_at > %s"
            args.append(since)
        rows = await self._all(sql + " ORDER BY created_at, seq", args)
        return decode_records([(r["seq"], r["body"]) for r in rows])

    async def count(self, *, skill: str | None = None) -> dict[str, int]:
        where = " WHERE skill = %s" if skill is not None else ""
        rows = await self._all(f"SELECT kind, COUNT(*) AS n FROM slmgraph_learn_records{where} GROUP BY kind",
                               (skill,) if skill is not None else ())
        return {r["kind"]: int(r["n"]) for r in rows}

    async def add_outcome(self, skill: str, version: str | None, escalated: bool, cost_usd: float, at: float) -> None:
        await self._exec(
            "INSERT INTO slmgraph_learn_stream AS s VALUES (%s,%s,%s,1,%s,%s) ON CONFLICT (minute, skill, version) "
            "DO UPDATE SET runs = s.runs + 1, escalations = s.escalations + excluded.escalations, "
            "cost_usd = s.cost_usd + excluded.cost_usd", (int(at // 60), skill, version or "", int(escalated), cost_usd),
        )

    async def stream(self, skill: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE skill = %s" if skill else ""
        rows = await self._all("SELECT minute, skill, version, runs, escalations, cost_usd FROM slmgraph_learn_stream"
                               f"{where} ORDER BY minute, skill, version", (skill,) if skill else ())
        return [{**r, "minute": int(r["minute"]), "runs": int(r["runs"]), "escalations": int(r["escalations"])} for r in rows]

    # -- snapshots ------------------------------------------------------------------
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._exec(
            "INSERT INTO slmgraph_learn_snapshots VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
            (snapshot.id, snapshot.content_hash, snapshot.target, snapshot.created_at,
             len(snapshot.train), len(snapshot.holdout), snapshot.model_dump_json()),
        )

    async def snapshot(self, snapshot_id: str) -> Snapshot:
        prefix = snapshot_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._all("SELECT id, body FROM slmgraph_learn_snapshots WHERE id LIKE %s ORDER BY created_at DESC", (prefix,))
        if len(rows) != 1:
            if rows:
                raise UnknownVersionError("unique snapshot for the prefix", snapshot_id, [r["id"] for r in rows])
            raise UnknownVersionError("snapshot", snapshot_id, [s["id"] for s in await self.snapshots()])
        return decode_snapshot(rows[0]["id"], rows[0]["body"])

    async def snapshots(self, target: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE target = %s" if target else ""
        rows = await self._all("SELECT id, target, created_at, n_train AS train, n_holdout AS holdout "
                               f"FROM slmgraph_learn_snapshots{where} ORDER BY created_at DESC", (target,) if target else ())
        return [dict(r) for r in rows]

    # -- versions -------------------------------------------------------------------
    async def save_version(self, version: Version) -> None:
        await self._exec(
            "INSERT INTO slmgraph_learn_versions VALUES (%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            (version.id, version.target, version.created_at, version.strategy, version.model_dump_json()),
        )

    async def version(self, version_id: str) -> Version:
        rows = await self._all("SELECT body FROM slmgraph_learn_versions WHERE id = %s", (version_id,))
        if not rows:
            raise UnknownVersionError("version", version_id, [v.id for v in await self.versions()])
        return Version.model_validate_json(rows[0]["body"])

    async def versions(self, target: str | None = None) -> list[Version]:
        where = " WHERE target = %s" if target else ""
        rows = await self._all(f"SELECT body FROM slmgraph_learn_versions{where} ORDER BY created_at DESC", (target,) if target else ())
        return [Version.model_validate_json(r["body"]) for r in rows]

    @staticmethod
    async def _stack(conn: Any, target: str) -> list[str]:
        row = await (await conn.execute("SELECT stack FROM slmgraph_learn_current WHERE target = %s", (target,))).fetchone()
        return json.loads(row["stack"]) if row else []

    async def current(self, target: str) -> str | None:
        stack = await self.history(target)
        return stack[-1] if stack else None

    async def history(self, target: str) -> list[str]:
        async with self._conn() as conn:
            return await self._stack(conn, target)

    @contextlib.asynccontextmanager
    async def _locked(self, target: str) -> AsyncIterator[tuple[Any, list[str]]]:
        """One transaction holding the target's lock, with its stack as it is now."""
        async with self._conn(tx=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_TARGET, target))
            yield conn, await self._stack(conn, target)

    async def promote(self, target: str, version_id: str, reason: str = "", detail: dict[str, Any] | None = None) -> None:
        await self.version(version_id)  # must exist
        async with self._locked(target) as (conn, stack):
            if stack and stack[-1] == version_id:
                return
            stack.append(version_id)
            await self._write(conn, target, stack, "promote", version_id, {"reason": reason, **(detail or {})})

    async def rollback(
        self, target: str, reason: str, detail: dict[str, Any] | None = None, *, only_if: str | None = None,
    ) -> str | None:
        async with self._locked(target) as (conn, stack):
            if not stack or (only_if is not None and stack[-1] != only_if):
                return stack[-1] if stack else None
            left = stack.pop()
            now = stack[-1] if stack else None
            await self._write(conn, target, stack, "rollback", now, {"reason": reason, "from": left, **(detail or {})})
            return now

    @staticmethod
    async def _write(conn: Any, target: str, stack: list[str], kind: str, version: str | None, detail: dict) -> None:
        now = time.time()
        await conn.execute(
            "INSERT INTO slmgraph_learn_current VALUES (%s,%s,%s) ON CONFLICT (target) DO UPDATE SET "
            "stack = excluded.stack, changed_at = excluded.changed_at", (target, json.dumps(stack), now),
        )
        await conn.execute("INSERT INTO slmgraph_learn_events (at, target, kind, version, detail) VALUES (%s,%s,%s,%s,%s)",
                           (now, target, kind, version, json.dumps(detail, default=str)))

    async def log(self, event: Event) -> None:
        await self._exec("INSERT INTO slmgraph_learn_events (at, target, kind, version, detail) VALUES (%s,%s,%s,%s,%s)",
                         (event.at, event.target, event.kind, event.version, json.dumps(event.detail, default=str)))

    async def events(self, target: str | None = None, limit: int = 100) -> list[Event]:
        where = " WHERE target = %s" if target else ""
        rows = await self._all(f"SELECT seq, at, target, kind, version, detail FROM slmgraph_learn_events{where} "
                               "ORDER BY seq DESC LIMIT %s", ((target,) if target else ()) + (limit,))
        return [Event(seq=r["seq"], at=r["at"], target=r["target"], kind=r["kind"], version=r["version"],
                      detail=json.loads(r["detail"])) for r in reversed(rows)]

    # -- live shadow ----------------------------------------------------------------
    async def set_shadow(self, target: str, version_id: str | None, sample: float = 0.1, reason: str = "") -> None:
        if version_id is not None:
            await self.version(version_id)  # must exist
        async with self._conn(tx=True) as conn:
            if version_id is None:
                await conn.execute("DELETE FROM slmgraph_learn_shadow_target WHERE target = %s", (target,))
            else:
                await conn.execute(
                    "INSERT INTO slmgraph_learn_shadow_target VALUES (%s,%s,%s,%s) ON CONFLICT (target) DO UPDATE SET "
                    "version = excluded.version, sample = excluded.sample, changed_at = excluded.changed_at",
                    (target, version_id, sample, time.time()))
            await conn.execute("INSERT INTO slmgraph_learn_events (at, target, kind, version, detail) VALUES (%s,%s,%s,%s,%s)",
                               (time.time(), target, "shadow", version_id, json.dumps({"reason": reason, "sample": sample})))

    async def shadow_of(self, target: str) -> tuple[str, float] | None:
        rows = await self._all("SELECT version, sample FROM slmgraph_learn_shadow_target WHERE target = %s", (target,))
        return (rows[0]["version"], float(rows[0]["sample"])) if rows else None

    async def add_shadow(self, result: ShadowResult) -> bool:
        n = await self._exec(
            "INSERT INTO slmgraph_learn_shadow (key, candidate, target, at, body) VALUES (%s,%s,%s,%s,%s) "
            "ON CONFLICT (key) DO NOTHING", (result.key, result.candidate, result.target, result.at, result.model_dump_json()))
        return n == 1

    async def shadow_results(self, version_id: str) -> list[ShadowResult]:
        rows = await self._all("SELECT body FROM slmgraph_learn_shadow WHERE candidate = %s ORDER BY at, seq", (version_id,))
        return [ShadowResult.model_validate_json(r["body"]) for r in rows]

    def __repr__(self) -> str:
        return f"PostgresLearningStore({self.where!r})"
