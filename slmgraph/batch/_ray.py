"""The Ray executor: the rows split into shards, each a Ray task that builds the
graph and runs its rows against the shared model hosts and the shared store.

A task whose worker dies is retried by Ray (``max_retries``). The retry runs
:func:`~slmgraph.batch._job.run_rows` on the same shard: rows whose runs finished
are read back from their checkpoints, interrupted runs are recovered from theirs,
so a finished row is never redone. Records travel back to the driver, which alone
writes the output file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigError, MissingDependencyError
from ._input import BatchRow
from ._job import held_graph, run_rows

__all__ = ["RayExecutor"]

log = logging.getLogger("slmgraph.batch")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("Ray", "ray") from None
    return ray


def _run_shard(source: Any, rows: list[BatchRow], job: str, id_col: str, concurrency: int) -> list[dict[str, Any]]:
    """Body of one shard task, in a Ray worker process."""
    records: list[dict[str, Any]] = []

    async def main() -> None:
        async with held_graph(source.build()) as graph:
            await run_rows(graph, rows, job=job, id_col=id_col, concurrency=concurrency, emit=records.append)

    asyncio.run(main())
    return records


class RayExecutor:
    """Shards on a Ray cluster.

    Args:
        address: ``"auto"`` (a running cluster if there is one, else a local one
            started here) or a cluster address (``ray://host:10001``, ``host:6379``).
        workers: shard tasks running at once (and CPUs of a local cluster).
        shard_size: rows per shard (default: spread over 4 shards per worker, at
            most 500 rows each).
        max_retries: retries of a shard whose worker died.
    """

    def __init__(self, address: str = "auto", *, workers: int = 2, shard_size: int | None = None, max_retries: int = 3) -> None:
        if workers < 1:
            raise ConfigError("workers", "must be at least 1")
        self.address = address
        self.workers = workers
        self.shard_size = shard_size
        self.max_retries = max_retries

    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
            if self.address == "auto":
                try:
                    ray.init(address="auto", **kwargs)
                except (ConnectionError, RuntimeError):
                    ray.init(num_cpus=self.workers, **kwargs)
            else:
                try:
                    ray.init(address=self.address, **kwargs)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError("ray", f"cannot connect to the Ray cluster at {self.address!r} ({exc})") from None
        return ray

    def shards(self, rows: Sequence[BatchRow]) -> list[list[BatchRow]]:
        size = self.shard_size or max(1, min(500, -(-len(rows) // (4 * self.workers))))
        return [list(rows[i : i + size]) for i in range(0, len(rows), size)]

    async def run(self, source: Any, rows: Sequence[BatchRow], *, job: str, id_col: str, concurrency: int, emit: Any) -> None:
        ray = self._init()
        task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_run_shard)
        per_worker = max(1, concurrency // self.workers)
        pending = list(self.shards(rows))
        running: list[Any] = []
        while pending or running:
            while pending and len(running) < self.workers:
                running.append(task.remote(source, pending.pop(0), job, id_col, per_worker))
            ready, running = await asyncio.to_thread(ray.wait, running, num_returns=1)
            for ref in ready:
                try:
                    records = await asyncio.to_thread(ray.get, ref)
                except Exception as exc:  # noqa: BLE001 - retries used up: its rows stay for a rerun
                    log.error("a shard failed after %d retries (%s); rerun the job to finish its rows",
                              self.max_retries, exc)
                    continue
                for record in records:
                    result = emit(record)
                    if result is not None:
                        await result
