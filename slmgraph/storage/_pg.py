"""Connections to the shared PostgreSQL database: one DSN, one pool, typed errors.

Every connection is opened with ``autocommit=True`` and a dict row factory, as
LangGraph's ``AsyncPostgresSaver`` requires (its ``setup()`` runs
``CREATE INDEX CONCURRENTLY``, which cannot run inside a transaction), and with
``prepare_threshold=None`` (no server-side prepared statements), so a connection
pooler in transaction mode (PgBouncer, Supavisor) in front of the server does not
trip over statements prepared on another backend.

The pool checks a connection before lending it, so after a database restart the
dead connections are replaced instead of failing the next run. The check costs no
round trip: a connection whose server went away has a readable socket (the
server's farewell, or end of file), and only such a connection is tested with a
query, which fails and makes the pool replace it.

The learning loop and anything else that wants the same database calls
:func:`pg_pool` (or :func:`pg_connect`) with the same DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from .._errors import (
    ConfigError,
    MissingDependencyError,
    StorageAuthError,
    StorageError,
    StorageNotFoundError,
    StorageUnavailableError,
)

__all__ = ["is_postgres", "redact_dsn", "check_dsn", "pg_connect", "pg_pool", "storage_error", "check_idle", "POOL_SIZE", "pool_size"]

_SCHEMES = ("postgresql://", "postgres://")

#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT_S = 5

#: Connections per process (``SLMGRAPH_PG_POOL`` overrides it). Every run and
#: checkpoint write takes one for a statement or a short transaction; 16 keep a
#: server with its runs in flight from queueing on the pool, and 4 processes x 16
#: stay well under PostgreSQL's default ``max_connections = 100``.
POOL_SIZE = 16


def pool_size() -> int:
    """Connections per process: ``SLMGRAPH_PG_POOL`` or :data:`POOL_SIZE`.

    Raises:
        ConfigError: ``SLMGRAPH_PG_POOL`` is not a positive integer.
    """
    raw = os.environ.get("SLMGRAPH_PG_POOL", "").strip()
    if not raw:
        return POOL_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError("SLMGRAPH_PG_POOL", f"must be a positive number of connections, got {raw!r}")
    return int(raw)


def is_postgres(checkpoint: Any) -> bool:
    """Whether a ``checkpoint`` setting names a PostgreSQL database."""
    return isinstance(checkpoint, str) and checkpoint.strip().lower().startswith(_SCHEMES)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (for messages and logs)."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password=)\S+", r"\1***", dsn)


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError("PostgreSQL checkpoints", "postgres") from None
    return psycopg


def check_dsn(dsn: str) -> str:
    """Validate a PostgreSQL DSN without connecting.

    Raises:
        ConfigError: (field ``checkpoint``) the DSN cannot be parsed.
    """
    shown = redact_dsn(dsn)
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError("checkpoint", f"{shown} is not a valid PostgreSQL DSN ({exc}); "
                          "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    if not parts.path.strip("/") and "dbname=" not in (parts.query or ""):
        raise ConfigError("checkpoint", f"{shown} names no database; expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    psycopg = _driver()
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError("checkpoint", f"{shown} is not a valid PostgreSQL DSN ({_first_line(exc)})") from None
    return dsn


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def storage_error(dsn: str, exc: BaseException) -> StorageError:
    """The typed error for a failure to connect to (or use) the database at ``dsn``."""
    shown = redact_dsn(dsn)
    text = str(exc)
    state = getattr(exc, "sqlstate", None) or ""
    if state in ("28P01", "28000") or "password authentication failed" in text or "no password supplied" in text:
        return StorageAuthError(shown, f"the server refused the credentials ({_first_line(exc)}); check the user and password in the DSN")
    if state == "53300" or "too many clients" in text or "remaining connection slots" in text:
        return StorageUnavailableError(shown, f"the server has no free connection ({_first_line(exc)}); lower "
                                       "SLMGRAPH_PG_POOL (connections per process) or raise max_connections")
    if state == "3D000" or re.search(r"database \"[^\"]*\" does not exist", text):
        return StorageNotFoundError(shown, f"{_first_line(exc)}; create it (`createdb NAME`) or fix the name in the DSN")
    return StorageUnavailableError(
        shown, f"cannot reach the server ({_first_line(exc)}); is PostgreSQL running there and accepting connections?"
    )


def _connect_kwargs() -> dict[str, Any]:
    from psycopg.rows import dict_row

    return {"autocommit": True, "row_factory": dict_row, "prepare_threshold": None}


async def check_idle(conn: Any) -> None:
    """The pool's check of a connection before it is lent (see the module text).

    An idle connection has nothing to read. A readable one was closed by the server
    (a restart, ``pg_terminate_backend``, an idle timeout) or holds a notice: it is
    tested with an empty query, which raises for a dead one, so the pool discards it.
    """
    from psycopg_pool import AsyncConnectionPool

    try:
        poller = select.poll()  # poll, not select: no limit on the descriptor's number
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        readable = bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - a closed connection has no socket: test it
        readable = True
    if readable or conn.closed or conn.broken:
        await AsyncConnectionPool.check_connection(conn)


async def pg_connect(dsn: str) -> Any:
    """One async connection (autocommit, dict rows) to ``dsn``; the caller closes it.

    Raises:
        ConfigError: a malformed DSN.
        StorageUnavailableError, StorageAuthError, StorageNotFoundError.
    """
    psycopg = _driver()
    check_dsn(dsn)
    try:
        return await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, **_connect_kwargs())
    except psycopg.Error as exc:
        raise storage_error(dsn, exc) from None
    except OSError as exc:
        raise storage_error(dsn, exc) from None


@contextlib.asynccontextmanager
async def pg_pool(dsn: str, *, max_size: int | None = None, min_size: int = 1) -> AsyncIterator[Any]:
    """An open ``psycopg_pool.AsyncConnectionPool`` on ``dsn``, closed on exit.

    One connection is made first, so a wrong password, a missing database or an
    unreachable server is reported as such (a pool alone would only time out).
    ``max_size`` defaults to :func:`pool_size`; ``min_size`` connections are open
    before this returns (a graph's store opens all of them, see
    :class:`~slmgraph.storage.PostgresStore`).

    Raises:
        ConfigError, StorageUnavailableError, StorageAuthError, StorageNotFoundError.
    """
    max_size = max_size or pool_size()
    min_size = min(max(1, min_size), max_size)
    probe = await pg_connect(dsn)
    await probe.close()
    try:
        from psycopg_pool import AsyncConnectionPool
    except ImportError:
        raise MissingDependencyError("PostgreSQL checkpoints", "postgres") from None
    sweeps: set[asyncio.Future[Any]] = set()
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, **_connect_kwargs()},
        # A connection is checked before it is lent: after a server restart the
        # pool replaces the dead ones instead of handing them to a run.
        check=lambda conn: _checked(pool, conn, sweeps),
        open=False,
        name="slmgraph",
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
    except Exception as exc:  # PoolTimeout: the server let one connection in, not all of them
        await pool.close()
        raise StorageUnavailableError(
            redact_dsn(dsn), f"could not open {min_size} connections within {CONNECT_TIMEOUT_S * 2} s ({_first_line(exc)}); "
            "are max_connections (or the role's CONNECTION LIMIT) used up? Lower SLMGRAPH_PG_POOL or raise the limit"
        ) from None
    try:
        yield pool
    finally:
        for sweep in list(sweeps):
            sweep.cancel()
        await pool.close()


async def _checked(pool: Any, conn: Any, sweeps: set[asyncio.Future[Any]]) -> None:
    """:func:`check_idle`; when a connection turns out dead, every idle one is
    swept at once (``pool.check()``), so after a server restart the pool does not
    hand out its dead connections one by one, each failed check followed by the
    pool's growing back-off pause."""
    try:
        await check_idle(conn)
    except Exception:
        if not sweeps:
            sweep = asyncio.ensure_future(pool.check())
            sweeps.add(sweep)
            sweep.add_done_callback(sweeps.discard)
            sweep.add_done_callback(lambda t: t.cancelled() or t.exception())  # the pool logs its own failures
        raise
