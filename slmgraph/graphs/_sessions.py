"""Where a durable run's compiled graph and runs store come from.

A :class:`Sessions` holds the wiring of one :class:`~._runner.Runner`: the graph
compiled once with the caller's checkpointer (or without one), or compiled per
session on a SQLite file or a PostgreSQL DSN the runner opens itself; and the runs
store that lives beside the checkpoints (the same SQLite file, the same database,
or memory). :meth:`Sessions.open` also makes the store's effect log the one the
graph's nodes see (``RUN_EFFECTS``) for the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from ._durable import GuardedSaver, StoredEffects, settle, sqlite_file_of, sqlite_saver
from ._nodes import RUN_EFFECTS
from ._runs import RunStore
from ._runs_memory import MemoryRunStore
from ._runs_sqlite import SqliteRunStore

__all__ = ["Sessions"]


class Sessions:
    """The compiled graph and runs store for each run of one graph.

    Args:
        builder: the graph, not yet compiled.
        checkpoint: SQLite file path, a PostgreSQL DSN, a LangGraph checkpointer, or ``None``.
        name: the compiled graph's name.
    """

    def __init__(self, builder: StateGraph, checkpoint: Any, name: str) -> None:
        self.builder, self.checkpoint, self.name = builder, checkpoint, name
        self.store: RunStore | None = None
        self._plain: CompiledStateGraph | None = None
        from ..storage._pg import is_postgres  # a DSN: the shared PostgreSQL store

        #: The PostgreSQL saver and runs store when ``checkpoint`` is a DSN.
        self.pg: Any = None
        self._pg_graph: tuple[Any, CompiledStateGraph] | None = None
        if is_postgres(checkpoint):
            from ..storage._postgres import PostgresStore

            self.pg = PostgresStore(str(checkpoint))
        elif checkpoint is None:
            self._plain = builder.compile(name=name)
        elif isinstance(checkpoint, BaseCheckpointSaver):
            self._plain = builder.compile(checkpointer=GuardedSaver(checkpoint), name=name)

    @contextlib.asynccontextmanager
    async def compiled(self) -> AsyncIterator[CompiledStateGraph]:
        """The compiled graph, its checkpointer open for the session."""
        if self._plain is not None:
            yield self._plain
            return
        if self.pg is not None:
            async with self.pg.session() as saver:
                if self._pg_graph is None or self._pg_graph[0] is not saver:  # compiled once per open pool
                    self._pg_graph = (saver, self.builder.compile(checkpointer=GuardedSaver(saver), name=self.name))
                yield self._pg_graph[1]
            return
        async with sqlite_saver(Path(self.checkpoint)) as saver:
            yield self.builder.compile(checkpointer=GuardedSaver(saver), name=self.name)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[tuple[CompiledStateGraph, RunStore]]:
        """The compiled graph and the runs store in the same SQLite file.

        With a checkpointer of the caller's (compiled once), the store's connection
        stays open from run to run, as the caller's does. When the runner opens the
        checkpoint itself for each session, the store's connection closes with the
        last open session, so that closing the graph's connections folds the WAL
        back into the file."""
        if self._plain is not None:  # compiled once: no connection to open per run
            async with self._with_store(self._plain) as pair:
                yield pair
            return
        try:
            async with self.compiled() as graph, self._with_store(graph) as pair:
                yield pair
        finally:
            if self.store is not None and self.store.durable and self.store.sessions == 0:
                await settle(self.store.close())

    @contextlib.asynccontextmanager
    async def _with_store(self, graph: CompiledStateGraph) -> AsyncIterator[tuple[CompiledStateGraph, RunStore]]:
        if self.store is None:
            self.store = await self._make_store()
        store = self.store
        store.sessions += 1
        token = RUN_EFFECTS.set(self._effects)
        try:
            yield graph, store
        finally:
            try:
                RUN_EFFECTS.reset(token)
            except ValueError:  # closed from another context (a collected generator)
                pass
            store.sessions -= 1

    async def _make_store(self) -> RunStore:
        from ..storage._postgres import postgres_store_of

        path: Path | None = None
        shared: RunStore | None = self.pg.store if self.pg is not None else None
        if shared is None and isinstance(self.checkpoint, (str, Path)):
            path = Path(self.checkpoint)
        elif shared is None and isinstance(self.checkpoint, BaseCheckpointSaver):
            shared = postgres_store_of(self.checkpoint)
            path = None if shared else await sqlite_file_of(self.checkpoint)
        if shared is None and path is not None and isinstance(self.checkpoint, BaseCheckpointSaver):
            # The caller's saver, open for the graph's life: the runs table borrows its connection.
            return SqliteRunStore(path, saver=self.checkpoint)
        return shared or (SqliteRunStore(path) if path is not None else MemoryRunStore())

    def _effects(self, thread_id: str, run_id: str) -> StoredEffects | None:
        return StoredEffects(self.store, thread_id, run_id) if self.store is not None else None
