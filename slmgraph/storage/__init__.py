"""Storage behind one DSN: SQLite by default, PostgreSQL when several processes or
machines share state (``checkpoint = "postgresql://USER:PASSWORD@HOST:PORT/DB"``).

With PostgreSQL, checkpoints go through LangGraph's ``AsyncPostgresSaver`` and the
runs table, thread leases and effect log live in the same database. Other parts
(the learning loop) get connections to the same database with :func:`pg_pool` or
:func:`pg_connect`. Needs the ``slmgraph[postgres]`` extra.
"""

from .._errors import StorageAuthError, StorageError, StorageNotFoundError, StorageUnavailableError
from ._pg import check_dsn, is_postgres, pg_connect, pg_pool, redact_dsn
from ._pg_runs import PostgresRunStore
from ._postgres import PostgresStore, postgres_store_of

__all__ = [
    "is_postgres",
    "check_dsn",
    "redact_dsn",
    "pg_connect",
    "pg_pool",
    "PostgresStore",
    "PostgresRunStore",
    "postgres_store_of",
    "StorageError",
    "StorageUnavailableError",
    "StorageAuthError",
    "StorageNotFoundError",
]
