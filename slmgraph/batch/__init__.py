"""Resumable batch jobs: ``slmgraph batch GRAPH input.jsonl|input.csv --out results.jsonl``.

Each row runs durably on its own thread (``batch/<job>/<id>``), so a rerun of the
same command skips finished rows and finishes interrupted ones from their
checkpoints. Executors: :class:`LocalExecutor` (asyncio, the default) and
:class:`RayExecutor` (the ``ray`` extra).
"""

from .._lazy import lazy_exports

# Lazy (PEP 562): `slmgraph --help` builds this package's parser without loading
# the graph runtime.
_EXPORTS = {
    "BatchRow": "._input", "read_rows": "._input", "RayExecutor": "._ray",
    "Executor": "._run", "GraphSource": "._run", "LocalExecutor": "._run", "capacity": "._run",
    "run_batch": "._run", "BatchSummary": "._summary",
}  # fmt: skip
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
