"""Resumable batch jobs: ``slmgraph batch GRAPH input.jsonl|input.csv --out results.jsonl``.

Each row runs durably on its own thread (``batch/<job>/<id>``), so a rerun of the
same command skips finished rows and finishes interrupted ones from their
checkpoints. Executors: :class:`LocalExecutor` (asyncio, the default) and
:class:`RayExecutor` (the ``ray`` extra).
"""

from ._input import BatchRow, read_rows
from ._ray import RayExecutor
from ._run import Executor, GraphSource, LocalExecutor, capacity, run_batch
from ._summary import BatchSummary

__all__ = [
    "run_batch",
    "GraphSource",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "BatchRow",
    "BatchSummary",
    "read_rows",
    "capacity",
]
