"""Retention: remove the checkpoints and runs of finished threads older than a bound.

A thread is *finished* when every run recorded on it ended (``done``, ``superseded``
or ``rejected``) and the newest one ended before the bound; a thread with a run
that is accepted, running or failed (resumable) is kept, whatever its age. What is
removed: the thread's checkpoints (through the saver's own ``adelete_thread``), its
rows in the runs table and its stored effects. Nothing else: the learning loop's
snapshots and datasets live in their own tables and are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ..graphs._runs import FINISHED  # done, rejected, superseded, cancelled

__all__ = ["PruneReport", "parse_age", "prune"]



_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` in seconds.

    Raises:
        ConfigError: (field ``older_than``) anything else.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise ConfigError("older_than", f"{text!r} is not an age; use a number and a unit, e.g. 30d, 12h, 90m")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    threads: list[str] = field(default_factory=list)
    runs: int = 0
    checkpoints: int = 0
    kept_unfinished: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "threads": len(self.threads), "runs": self.runs,
                "checkpoints": self.checkpoints, "kept_unfinished": self.kept_unfinished,
                "thread_ids": self.threads}

    def line(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"{verb} {len(self.threads)} finished thread(s): {self.checkpoints} checkpoint(s), "
                f"{self.runs} run(s); kept {self.kept_unfinished} thread(s) with unfinished runs")


def _forget_sqlite(path: Path, threads: list[str]) -> None:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for t in threads:
            conn.execute("DELETE FROM slmgraph_effects WHERE thread_id = ?", (t,))
            conn.execute("DELETE FROM slmgraph_runs WHERE thread_id = ?", (t,))
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _forget_postgres(pool: Any, threads: list[str]) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("DELETE FROM slmgraph_effects WHERE thread_id = ANY(%s)", (threads,))
        await conn.execute("DELETE FROM slmgraph_runs WHERE thread_id = ANY(%s)", (threads,))


@contextlib.asynccontextmanager
async def _open(checkpoint: str | Path) -> AsyncIterator[tuple[Any, Any]]:
    """The saver and runs store behind a checkpoint setting (a file or a DSN)."""
    from ._pg import is_postgres

    if is_postgres(checkpoint):
        from ._postgres import PostgresStore

        pg = PostgresStore(str(checkpoint))
        async with pg.session() as saver:
            yield saver, pg.store
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from ..graphs._runs_sqlite import SqliteRunStore

    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError("checkpoint", f"no checkpoint file at {str(path)!r}; nothing to prune")
    store = SqliteRunStore(path)
    try:
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            await saver.setup()
            yield saver, store
    finally:
        await store.close()


async def prune(checkpoint: str | Path, *, older_than_s: float, dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove the finished threads in the store at ``checkpoint`` (a SQLite file or
    a PostgreSQL DSN) whose last run ended more than ``older_than_s`` seconds ago.

    Raises:
        ConfigError: no such checkpoint file, or a malformed DSN.
        StorageError: the database cannot be reached.
    """
    from ._pg_runs import PostgresRunStore

    cutoff = (time.time() if now is None else now) - older_than_s
    report = PruneReport(dry_run=dry_run)
    async with _open(checkpoint) as (saver, store):
        by_thread: dict[str, list[Any]] = defaultdict(list)
        for run in await store.runs():
            by_thread[run.thread_id].append(run)
        for thread, runs in by_thread.items():
            if any(r.status not in FINISHED for r in runs):
                report.kept_unfinished += 1
                continue
            if max(r.updated for r in runs) >= cutoff:
                continue
            report.threads.append(thread)
            report.runs += len(runs)
            report.checkpoints += len([c async for c in saver.alist({"configurable": {"thread_id": thread}})])
        if dry_run or not report.threads:
            return report
        for thread in report.threads:
            await saver.adelete_thread(thread)
        if isinstance(store, PostgresRunStore):
            await _forget_postgres(store.pool, report.threads)
        else:
            await asyncio.to_thread(_forget_sqlite, store.path, report.threads)
    return report
