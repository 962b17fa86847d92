"""Running rows through a graph durably: one thread per row, resumable, bounded.

Row ``id`` of job ``job`` runs on thread ``batch/<job>/<id>``, so its run is in
the runs table before it starts and its state is checkpointed step by step. When a
job is run again:

* a row already in the output file is skipped;
* a row whose run finished (but whose output line was lost in a crash) is read
  back from its checkpoint, not run again;
* a row whose run was interrupted is finished by ``recover()`` from its last
  checkpoint, and its finished nodes are not re-run;
* any other row runs.

The same :func:`run_rows` serves the local executor and each Ray shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from .._errors import EmptyRequestError, RequestShapeError, RequestTooLargeError, SlmGraphError
from ..graphs._graph import SLMGraph
from ..graphs._state import RunResult
from ._input import BatchRow

__all__ = ["run_rows", "held_graph", "job_name", "record_of", "thread_of", "bad_record"]

log = logging.getLogger("slmgraph.batch")

Emit = Callable[[dict[str, Any]], Awaitable[None] | None]


def job_name(out: str | Path) -> str:
    """A stable job name for an output file (the same file resumes the same job)."""
    return hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]


def thread_of(job: str, row_id: str) -> str:
    return f"batch/{job}/{row_id}"


def bad_record(row: BatchRow, id_col: str, problem: str) -> dict[str, Any]:
    return {id_col: row.id, "row": row.n, "status": "bad_input", "error": problem}


def record_of(row: BatchRow, id_col: str, result: RunResult) -> dict[str, Any]:
    """The output line of a finished row (it keeps the input's id column)."""
    t = result.totals
    return {
        id_col: row.id,
        "row": row.n,
        "status": result.status,
        "route": result.route,
        "answer": result.answer,
        "output": result.output,
        "escalation_reason": result.escalation_reason,
        "calls": t.calls,
        "large_calls": t.large_calls,
        "cost_usd": t.cost_usd,
        "baseline_usd": t.baseline_usd,
        "thread_id": result.thread_id,
        "error": result.error,
    }


@contextlib.asynccontextmanager
async def held_graph(graph: SLMGraph) -> AsyncIterator[SLMGraph]:
    """``graph`` with its store opened once for the whole job, instead of per run:
    the PostgreSQL pool is held open, or one SQLite connection is shared."""
    if graph.runner.pg is not None:
        async with graph.runner.pg.session():
            yield graph
        return
    if not isinstance(graph.checkpoint, (str, Path)):
        yield graph
        return
    from ..graphs._durable import sqlite_saver

    async with sqlite_saver(Path(graph.checkpoint)) as saver:
        yield graph.with_checkpoint(saver)


async def _known(graph: SLMGraph, threads: list[str]) -> dict[str, str]:
    """The newest run's status of each of these rows' threads (one query on the
    rows' own threads, never the whole runs table)."""
    async with graph.runner._session() as (_, store):
        return dict(await store.statuses(threads))


async def run_rows(
    graph: SLMGraph,
    rows: Iterable[BatchRow],
    *,
    job: str,
    id_col: str,
    concurrency: int,
    emit: Emit,
) -> None:
    """Run ``rows`` (valid ones, not yet in the output) with at most ``concurrency``
    in flight, calling ``emit(record)`` as each one finishes. A row's failure is its
    record (status ``error`` or ``bad_input``), never the job's."""
    rows = list(rows)
    durable = graph.checkpoint is not None
    if durable:
        # Interrupted runs first, from their checkpoints (a dead worker's rows).
        await graph.arecover(thread_prefix=thread_of(job, ""))
    known = await _known(graph, [thread_of(job, r.id) for r in rows]) if durable else {}
    queue = iter(rows)

    async def one(row: BatchRow) -> dict[str, Any]:
        thread = thread_of(job, row.id)
        try:
            if known.get(thread) == "done":
                result = await graph.aget_result(thread)  # finished before: read, never re-run
                if result is not None and result.status != "running":
                    return record_of(row, id_col, result)
            return record_of(row, id_col, await graph.ainvoke(row.input, thread_id=thread))
        except (EmptyRequestError, RequestShapeError, RequestTooLargeError) as exc:
            return bad_record(row, id_col, f"row {row.n}: {type(exc).__name__}: {exc}")
        except SlmGraphError as exc:
            rec = bad_record(row, id_col, f"row {row.n}: {type(exc).__name__}: {exc}")
            rec["status"] = "error"
            rec["thread_id"] = thread
            return rec

    async def worker() -> None:
        for row in queue:  # one shared iterator: each row is taken once
            record = await one(row)
            done = emit(record)
            if done is not None:
                await done

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
