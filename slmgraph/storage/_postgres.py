"""A graph's PostgreSQL store: LangGraph's ``AsyncPostgresSaver`` for checkpoints and
:class:`PostgresRunStore` for runs, leases and effects, on one pool.

``setup()`` (the saver's migrations and slmgraph's tables) runs once per process,
under a session advisory lock, so several processes starting at once against a
fresh database do not race each other's ``CREATE`` statements.

The saver runs on a pool, and :func:`pooled_saver` drops the saver's instance
lock: ``AsyncPostgresSaver`` takes one ``asyncio.Lock`` around every statement
(needed on a single shared connection), which on a pool serialises every
checkpoint read and write of the process behind one another, so the pool never
has more than one connection busy (langgraph issue 7259). On a pool each
statement checks out its own connection, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .._errors import MissingDependencyError
from ._pg import check_dsn, pg_pool, pool_size, storage_error
from ._pg_runs import SCHEMA, PostgresRunStore

__all__ = ["PostgresStore", "setup_postgres", "postgres_store_of", "pooled_saver"]

#: The advisory lock key that serialises schema set-up across processes.
_SETUP_LOCK = 0x736C6D67  # "slmg"


def _saver_class() -> Any:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise MissingDependencyError("PostgreSQL checkpoints", "postgres") from None
    return AsyncPostgresSaver


class _NoLock:
    """Stands in for the saver's ``asyncio.Lock`` when it runs on a pool."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def pooled_saver(pool: Any) -> Any:
    """LangGraph's ``AsyncPostgresSaver`` on ``pool``, without its instance lock
    (see the module text); on the saver's own (locked) path for anything else."""
    saver = _saver_class()(conn=pool)
    from psycopg_pool import AsyncConnectionPool

    if isinstance(pool, AsyncConnectionPool) and saver.pipe is None and hasattr(saver, "lock"):
        saver.lock = _NoLock()
    return saver


async def setup_postgres(pool: Any, saver: Any) -> None:
    """Create the checkpoint tables (the saver's own migrations) and slmgraph's.

    On autocommit connections, outside any transaction: the saver's migrations
    include ``CREATE INDEX CONCURRENTLY``, which PostgreSQL refuses inside one.
    """
    async with pool.connection() as conn:
        # Polled, not waited for: a session blocked in pg_advisory_lock() is an open
        # transaction, and the holder's CREATE INDEX CONCURRENTLY waits for every
        # open transaction, so a blocking wait would deadlock the two.
        delay = 0.02
        while not (await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_SETUP_LOCK,))).fetchone())["got"]:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            await saver.setup()
            for statement in SCHEMA:
                await conn.execute(statement)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


class PostgresStore:
    """The saver and runs store of every graph on one DSN, opened by the first
    session and closed when the last one ends (sessions may overlap in one loop).

    ``store`` is the same object for the graph's whole life; its pool is swapped in
    when a session opens the database.
    """

    def __init__(self, dsn: str, *, max_size: int | None = None) -> None:
        self.dsn = check_dsn(dsn)
        self.max_size = max_size
        self.store = PostgresRunStore(None, dsn)
        self.saver: Any = None
        self._users = 0
        self._opening: asyncio.Future[Any] | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def _open(self) -> Any:
        import psycopg

        stack = contextlib.AsyncExitStack()
        try:
            # Every connection is opened up front (a password exchange each): a
            # burst of runs then never waits while the pool grows one at a time.
            size = self.max_size or pool_size()
            pool = await stack.enter_async_context(pg_pool(self.dsn, max_size=size, min_size=size))
            saver = pooled_saver(pool)
            try:
                await setup_postgres(pool, saver)
            except psycopg.Error as exc:
                raise storage_error(self.dsn, exc) from None
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self.store.pool = pool
        self.store._ready = True
        self.saver = saver
        return saver

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """The open saver (``AsyncPostgresSaver``) for the duration of the block.

        Raises:
            StorageUnavailableError, StorageAuthError, StorageNotFoundError: on open.
        """
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        self._users += 1
        try:
            saver = await asyncio.shield(self._opening)
            yield saver
        finally:
            self._users -= 1
            if self._users == 0:
                opening, self._opening = self._opening, None
                if opening is not None and opening.done() and not opening.cancelled() and opening.exception() is None:
                    stack, self._stack = self._stack, None
                    self.saver = None
                    if stack is not None:
                        await stack.aclose()


def postgres_store_of(saver: Any) -> PostgresRunStore | None:
    """The runs store beside an open ``AsyncPostgresSaver`` (on its pool), made once
    per saver; ``None`` for any other checkpointer."""
    if type(saver).__module__.split(".")[:3] != ["langgraph", "checkpoint", "postgres"]:
        return None
    store = getattr(saver, "_slmgraph_runs", None)
    if store is None:
        store = PostgresRunStore(saver.conn)
        saver._slmgraph_runs = store
    return store
