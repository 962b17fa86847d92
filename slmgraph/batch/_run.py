"""``run_batch``: a resumable batch job over a JSON-lines or CSV file.

The job reads every row, skips those already in the output file, answers bad rows
with a ``bad_input`` line (row number and reason), and hands the rest to an
executor: :class:`LocalExecutor` (asyncio, in this process) or
:class:`~slmgraph.batch.RayExecutor` (shards on a Ray cluster). Output lines are
appended as rows finish; the runs themselves are durable in the graph's store, so
a line lost in a crash is rewritten from the checkpoint on the next run.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from ..config import Config
from ..eval._runner import ResultsFile
from ..graphs._graph import SLMGraph
from ._input import BatchRow, read_rows
from ._job import bad_record, held_graph, job_name, run_rows
from ._progress import BatchProgress
from ._summary import BatchSummary, summarize

__all__ = ["GraphSource", "Executor", "LocalExecutor", "run_batch", "capacity"]

#: Rows in flight per unit of model capacity: keeps every host slot fed while
#: other rows are between model calls.
_FEED = 2


@dataclass(frozen=True)
class GraphSource:
    """How to build the job's graph in any process: a ready graph's name (or
    ``"module:function"``, a factory ``f(models, *, config, prices)``) and the config."""

    name: str
    config: Config

    def build(self) -> SLMGraph:
        from ..graphs._blueprints import GRAPHS, graph_from_config

        if ":" in self.name and self.name not in GRAPHS:
            module, _, attr = self.name.partition(":")
            GRAPHS[self.name] = getattr(importlib.import_module(module), attr)
        return graph_from_config(self.name, self.config)


def capacity(config: Config) -> int:
    """Model calls the configured hosts take at once: for the busiest model entry,
    its hosts times ``max_parallel`` (4 per host when unset)."""
    entries = [config.small, *([config.large] if config.large else []), *config.models.values()]
    return max(len(c.hosts or [c.host or "local"]) * (c.max_parallel or 4) for c in entries)


Emit = Callable[[dict[str, Any]], Awaitable[None] | None]


class Executor(Protocol):
    """Runs a job's rows somewhere, calling ``emit`` with each finished row's record."""

    async def run(
        self, source: GraphSource, rows: Sequence[BatchRow], *, job: str, id_col: str, concurrency: int, emit: Emit
    ) -> None: ...


class LocalExecutor:
    """Every row in this process, on one event loop, ``concurrency`` at a time."""

    def __init__(self, graph: SLMGraph | None = None) -> None:
        self.graph = graph

    async def run(
        self, source: GraphSource, rows: Sequence[BatchRow], *, job: str, id_col: str, concurrency: int, emit: Emit
    ) -> None:
        graph = self.graph or source.build()
        async with held_graph(graph) as g:
            await run_rows(g, rows, job=job, id_col=id_col, concurrency=concurrency, emit=emit)


async def run_batch(
    source: GraphSource,
    input_path: str | Path,
    out: str | Path,
    *,
    input_col: str = "input",
    id_col: str = "id",
    concurrency: int | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> BatchSummary:
    """Run the graph of ``source`` over every row of ``input_path`` not yet in ``out``.

    Args:
        source: the graph (name and config), built where the rows run.
        input_path: ``.jsonl`` or ``.csv``; ``input_col`` holds the request,
            ``id_col`` the row's id (the row number when absent), kept in ``out``.
        out: the JSON-lines output; one line per row, in finishing order.
        concurrency: rows in flight (default: twice the model hosts' capacity).
        executor: :class:`LocalExecutor` by default.

    Raises:
        ConfigError: the input is missing or unreadable, or a CSV lacks ``input_col``.
    """
    started = time.perf_counter()
    rows = list(read_rows(input_path, input_col=input_col, id_col=id_col))
    results = ResultsFile(out, key=id_col, sync=False)
    done = results.load()
    first_of: dict[str, int] = {}
    todo: list[BatchRow] = []
    fresh: list[dict[str, Any]] = []
    duplicates: list[str] = []
    for row in rows:
        if row.id in first_of:
            duplicates.append(f"row {row.n}: repeats id {row.id!r} of row {first_of[row.id]}; not run")
            continue
        first_of[row.id] = row.n
        if row.id in done:
            continue
        if row.problem is not None:
            fresh.append(bad_record(row, id_col, row.problem))
        else:
            todo.append(row)
    skipped = len(first_of) - len(todo) - len(fresh)
    bar = BatchProgress(
        len(first_of), skipped, sum(float(r.get("cost_usd") or 0.0) for r in done.values()),
        enabled=progress, stream=stream,
    )
    results.path.parent.mkdir(parents=True, exist_ok=True)
    with results.path.open("a", encoding="utf-8") as f:
        import json

        def emit(record: dict[str, Any]) -> None:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()
            done[str(record[id_col])] = record
            bar.advance(record)

        try:
            for record in fresh:
                emit(record)
            if todo:
                cfg = source.config
                n = concurrency or max(1, min(256, _FEED * capacity(cfg)))
                await (executor or LocalExecutor()).run(
                    source, todo, job=job_name(out), id_col=id_col, concurrency=n, emit=emit
                )
        finally:
            bar.close()
    ordered = [done[r] for r in first_of if r in done]
    summary = summarize(ordered, ran=len(todo) + len(fresh), skipped=skipped, seconds=time.perf_counter() - started)
    summary.bad_rows += duplicates
    summary.bad_rows += [f"row {r.n}: not finished (its worker failed); run the same command again"
                         for r in todo if r.id not in done]
    return summary
