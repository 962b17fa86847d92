"""What durable runs cost per checkpointed run.

Both sides run the same slmgraph graph (rules router, one skill on an instant
scripted model) on one SQLite file with ``durability="sync"``:

* durable, path: ``SLMGraph.ainvoke`` with ``checkpoint=<file>``, which opens the
  saver per run, records the run, takes the thread's lease and marks the run
  done (two more transactions than the checkpoints);
* durable, shared saver: ``SLMGraph`` on one open saver (as ``slmgraph serve``
  does), so the difference to the baseline is the runs table alone;
* baseline: the same compiled LangGraph graph on one open saver, invoked
  directly (checkpoints only, no runs table).

Runs alternate in blocks; the figure is the median per-run time and the ratio.

Usage::

    .venv/bin/python benchmarks/durability.py [--runs 120] [--blocks 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel

from slmgraph import RulesRouter, Skill, build_graph
from slmgraph.graphs._state import new_run
from slmgraph.testing import FunctionModel


class Label(BaseModel):
    label: str


SKILL = Skill(name="label", description="labels", instructions="Label it.", output_type=Label)


async def main(runs: int, blocks: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="slmgraph-durability-"))
    model = FunctionModel(lambda m, s: {"label": "x"})
    graph = build_graph([SKILL], models={"small": model}, router=RulesRouter([], default="label"),
                        checkpoint=work / "durable.sqlite")
    per = max(1, runs // blocks)
    durable: list[float] = []
    shared_t: list[float] = []
    baseline: list[float] = []
    async with AsyncSqliteSaver.from_conn_string(str(work / "baseline.sqlite")) as saver:
        await saver.setup()
        raw = graph.compile(saver)
        shared = type(graph)(graph.spec, checkpoint=saver, name="shared")

        async def one_shared() -> None:
            await shared.ainvoke("hello")

        async def one_durable() -> None:
            await graph.ainvoke("hello")

        async def one_baseline() -> None:
            config = {"configurable": {"thread_id": uuid.uuid4().hex}}
            await raw.ainvoke(new_run("hello"), config, durability="sync")

        for _ in range(3):
            await one_durable()
            await one_shared()
            await one_baseline()
        for b in range(blocks):
            order = [(one_durable, durable), (one_shared, shared_t), (one_baseline, baseline)]
            for fn, out in order if b % 2 == 0 else reversed(order):
                started = time.perf_counter()
                for _ in range(per):
                    await fn()
                out.append((time.perf_counter() - started) / per)
    d, sh, r = statistics.median(durable), statistics.median(shared_t), statistics.median(baseline)
    print(f"{blocks} alternating blocks x {per} runs; median per run")
    print(f"durable, checkpoint=path (saver opened per run): {d * 1000:8.2f} ms  ratio {d / r:.2f}")
    print(f"durable, shared saver:                           {sh * 1000:8.2f} ms  ratio {sh / r:.2f}"
          f"  (runs table: +{1000 * (sh - r):.2f} ms per run)")
    print(f"baseline, LangGraph on a shared saver:           {r * 1000:8.2f} ms")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=120)
    p.add_argument("--blocks", type=int, default=6)
    a = p.parse_args()
    asyncio.run(main(a.runs, a.blocks))
