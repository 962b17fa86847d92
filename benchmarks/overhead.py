"""Orchestration overhead of slmgraph over a hand-written LangGraph graph.

Both graphs have the same shape -- router -> specialist -> END, with an
escalation node that this workload never reaches -- and do equivalent trivial
work on every run:

* router: a regular-expression routing decision. slmgraph uses a ``RulesRouter``,
  so the router node makes no model call (no model latency to hide overhead in);
* specialist: one call to the same instant model function, returning a constant
  JSON object, validated with the same pydantic output model, appended to the
  conversation and recorded as one ledger entry.

The raw graph declares the same state channels and reducers by hand (messages
with ``add_messages``, a ledger list with ``operator.add``): the figure is what
slmgraph's orchestration costs over writing the same graph directly.

Two pairs are measured:

* **Pair A**: no checkpointer on either side (slmgraph: ``checkpoint=None``).
* **Pair B**: a SQLite checkpointer on both sides (``AsyncSqliteSaver``, one file
  each, a new thread per run, ``durability="sync"`` on both: each step's
  checkpoint is on disk before the next starts, slmgraph's guarantee). slmgraph
  also keeps its runs table and thread lease in its file: that is in the figure.

slmgraph's edge functions are coroutines, so LangGraph runs them on the event
loop; the hand-written graph's are plain lambdas, which LangGraph runs in a
worker thread. The "raw, async edges" line shows the hand-written graph with
coroutine edges too, so the share of that choice in the ratio is visible.

Both run with ``ainvoke`` in one event loop. After a warm-up, runs are timed in
alternating blocks (slmgraph, raw, slmgraph, raw, ...; the first of each pair
alternates too), and the per-run time is the median over blocks.

Usage::

    .venv/bin/python benchmarks/overhead.py [--runs 2000] [--blocks 40] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import operator
import pstats
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

# Import slmgraph from this checkout even when run as `python benchmarks/overhead.py`
# (the script's directory, not the repo root, is then first on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from slmgraph import Rule, RulesRouter, Skill, build_graph  # noqa: E402
from slmgraph.models import Model, ModelReply, Usage  # noqa: E402

IMPORT_RSS_KIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

NODES_EXECUTED = 2  # router and specialist; END is not a node that runs
TARGET_RATIO = 1.10
TARGET_OVERHEAD_US = 1000.0

REQUEST = "I love this phone, the battery lasts for days"


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative"]


class Total(BaseModel):
    total: int


CONSTANT = {"sentiment": "positive"}


def instant(messages: Any, schema: Any) -> dict:
    """The model function both graphs call: constant JSON, no latency."""
    return CONSTANT


PATTERNS = [("sentiment", re.compile(r"\blove\b|\bhate\b", re.IGNORECASE)), ("add", re.compile(r"\d+\s*\+\s*\d+"))]


# --------------------------------------------------------------------------- slmgraph


def slm_graph(checkpoint=None):
    skills = [
        Skill(name="sentiment", description="rate sentiment", instructions="Rate the sentiment.", output_type=Sentiment),
        Skill(name="add", description="add two numbers", instructions="Add the numbers.", output_type=Total),
    ]
    router = RulesRouter([Rule("sentiment", (r"\blove\b", r"\bhate\b")), Rule("add", (r"\d+\s*\+\s*\d+",))])
    return build_graph(skills, models={"small": InstantModel()}, router=router, checkpoint=checkpoint)


class InstantModel(Model):
    """slmgraph's side of ``instant``: a backend that calls it and wraps the text in a
    reply. (The shipped FunctionModel also records every call for test assertions,
    which is test-double bookkeeping, not orchestration.)"""

    name = "instant"
    provider = "test"

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        started = time.perf_counter()
        value = instant(messages, schema)
        text = json.dumps(value)
        usage = Usage(sum(len(m.content) // 3 for m in messages), len(text) // 3)
        return ModelReply(text, self.name, self.provider, parsed=value, usage=usage, latency_s=time.perf_counter() - started)


# --------------------------------------------------------------------------- raw LangGraph


class RawState(TypedDict, total=False):
    """The same channels and reducers a hand-written graph of this shape would carry:
    the conversation (``add_messages``) and a per-call ledger (``operator.add``)."""

    request: str
    messages: Annotated[list[AnyMessage], add_messages]
    route: str | None
    route_confidence: float
    output: dict | None
    draft: Any
    confidence: float | None
    escalation_reason: str | None
    escalation_detail: str | None
    tool_calls: list[dict]
    answer: str | None
    status: str
    ledger: Annotated[list[dict], operator.add]


OUTPUT_TYPES: dict[str, type[BaseModel]] = {"sentiment": Sentiment, "add": Total}
INSTRUCTIONS = {"sentiment": "Rate the sentiment.", "add": "Add the numbers."}


async def raw_router(state: RawState) -> RawState:
    request = state["request"]
    route = next((skill for skill, pattern in PATTERNS if pattern.search(request)), None)
    return {"messages": [HumanMessage(request)], "route": route, "route_confidence": 1.0, "status": "running", "ledger": []}


async def raw_specialist(state: RawState) -> RawState:
    skill = state["route"]
    messages = [
        {"role": "system", "content": INSTRUCTIONS[skill]},
        {"role": "user", "content": state["request"]},
    ]
    started = time.perf_counter()
    text = json.dumps(instant(messages, None))
    entry = {
        "node": "specialist", "skill": skill, "model": "instant", "provider": "test", "tier": "small",
        "prompt_tokens": sum(len(m["content"]) // 3 for m in messages), "completion_tokens": len(text) // 3,
        "latency_s": time.perf_counter() - started, "cost_usd": 0.0, "escalation_reason": None,
    }  # fmt: skip
    output = OUTPUT_TYPES[skill].model_validate_json(text)
    answer = output.model_dump_json()
    return {
        "output": output.model_dump(mode="json"), "answer": answer, "status": "answered",
        "messages": [AIMessage(answer, name=skill)], "ledger": [entry],
    }  # fmt: skip


async def raw_escalation(state: RawState) -> RawState:
    return {"answer": "escalated", "status": "escalated"}


async def _to_specialist(s: RawState) -> str:
    return "specialist" if s.get("route") else "escalation"


async def _after_specialist(s: RawState) -> str:
    return "end" if s.get("status") == "answered" else "escalation"


def raw_graph(checkpointer=None, *, async_edges: bool = False):
    """The hand-written graph. Its edges are plain lambdas, as hand-written graphs
    usually have (LangGraph runs a sync edge function in a worker thread);
    ``async_edges`` makes them coroutines, as slmgraph's are."""
    b = StateGraph(RawState)
    b.add_node("router", raw_router)
    b.add_node("specialist", raw_specialist)
    b.add_node("escalation", raw_escalation)
    b.add_edge(START, "router")
    if async_edges:
        to_specialist, after_specialist = _to_specialist, _after_specialist
    else:
        to_specialist = lambda s: "specialist" if s.get("route") else "escalation"  # noqa: E731
        after_specialist = lambda s: "end" if s.get("status") == "answered" else "escalation"  # noqa: E731
    b.add_conditional_edges("router", to_specialist, ["specialist", "escalation"])
    b.add_conditional_edges("specialist", after_specialist, {"end": END, "escalation": "escalation"})
    b.add_edge("escalation", END)
    return b.compile(name="raw", checkpointer=checkpointer)


# --------------------------------------------------------------------------- timing


async def run_slm(graph) -> None:
    r = await graph.ainvoke(REQUEST)
    assert r.status == "answered" and r.output_json == CONSTANT, r


_threads = iter(range(10**9))


async def run_raw(graph) -> None:
    config = {"configurable": {"thread_id": f"raw-{next(_threads)}"}}
    extra = {"durability": "sync"} if graph.checkpointer is not None else {}
    r = await graph.ainvoke({"request": REQUEST}, config, **extra)
    assert r["status"] == "answered" and r["output"] == CONSTANT, r


async def block(fn, graph, n: int) -> float:
    """CPU seconds per run over ``n`` runs.

    The models are instant, so the process's CPU time (all threads, the SQLite
    writers included) is the run time without the time this shared VM spends
    running other tenants.
    """
    start = time.process_time()
    for _ in range(n):
        await fn(graph)
    elapsed = time.process_time() - start
    return elapsed / n


async def measure(graphs: dict[str, tuple[Any, Any]], runs: int, blocks: int, warmup: int) -> dict[str, list[float]]:
    """Alternating blocks of every graph; per-run CPU seconds of each block, by name."""
    for fn, graph in graphs.values():
        await block(fn, graph, warmup)
    per = max(1, runs // blocks)
    times: dict[str, list[float]] = {name: [] for name in graphs}
    names = list(graphs)
    for i in range(blocks):
        for name in (names if i % 2 == 0 else names[::-1]):
            fn, graph = graphs[name]
            times[name].append(await block(fn, graph, per))
    return times


async def pair_a(runs: int, blocks: int, warmup: int) -> dict[str, list[float]]:
    return await measure({
        "slmgraph": (run_slm, slm_graph()),
        "raw": (run_raw, raw_graph()),
        "raw, async edges": (run_raw, raw_graph(async_edges=True)),
    }, runs, blocks, warmup)


async def pair_b(runs: int, blocks: int, warmup: int, workdir: Path) -> dict[str, list[float]]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(workdir / "slm.sqlite")) as slm_saver, \
            AsyncSqliteSaver.from_conn_string(str(workdir / "raw.sqlite")) as raw_saver:
        await slm_saver.setup()
        await raw_saver.setup()
        return await measure({
            "slmgraph": (run_slm, slm_graph(checkpoint=slm_saver)),
            "raw": (run_raw, raw_graph(raw_saver)),
        }, runs, blocks, warmup)


def report(label: str, times: dict[str, list[float]]) -> float:
    """Print one pair's figures; returns the median paired ratio slmgraph / raw."""
    slm = statistics.median(times["slmgraph"])
    print(f"{label}")
    for name, ts in times.items():
        print(f"  {name + ' per run:':<28}{statistics.median(ts) * 1e6:10.1f} us   "
              f"(blocks min {min(ts) * 1e6:.1f}, max {max(ts) * 1e6:.1f})")
    ratio = 0.0
    for name in times:
        if name == "slmgraph":
            continue
        # Each slmgraph block runs right beside a raw block, so the two share whatever
        # else the machine is doing; the median of these paired ratios is the figure
        # least moved by that noise.
        r = statistics.median(s_ / r_ for s_, r_ in zip(times["slmgraph"], times[name]))
        overhead_us = (slm - statistics.median(times[name])) / NODES_EXECUTED * 1e6
        verdict = f"target <= {TARGET_RATIO:.2f}: {'PASS' if r <= TARGET_RATIO else 'FAIL'}" if name == "raw" else "(reference)"
        print(f"  ratio slmgraph / {name + ':':<18}{r:8.3f}   overhead per node {overhead_us:7.1f} us   {verdict}")
        if name == "raw":
            ratio = r
    return ratio


async def profile(runs: int, top: int) -> str:
    graph = slm_graph()
    await block(run_slm, graph, 50)
    prof = cProfile.Profile()
    prof.enable()
    await block(run_slm, graph, runs)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000, help="timed runs of each graph in pair A (default 2000)")
    p.add_argument("--b-runs", type=int, default=400, help="timed runs of each graph in pair B (default 400)")
    p.add_argument("--blocks", type=int, default=100, help="alternating blocks (default 100)")
    p.add_argument("--warmup", type=int, default=200, help="untimed runs of each first (default 200)")
    p.add_argument("--profile", action="store_true", help="also cProfile the slmgraph runs")
    p.add_argument("--top", type=int, default=30, help="rows of profile to print")
    args = p.parse_args(argv)

    import_rss_mib = IMPORT_RSS_KIB / 1024
    per = max(1, args.runs // args.blocks)
    print(f"python {sys.version.split()[0]}; {args.blocks} alternating blocks, {args.warmup} warm-up runs; "
          "CPU time (time.process_time), median of blocks")
    print("slmgraph: RulesRouter (no router model call), InstantModel (calls instant()), ainvoke")
    print("raw:      hand-written LangGraph StateGraph, same shape and state channels, ainvoke")
    a = report(f"Pair A: no checkpointer ({per} runs per block)", asyncio.run(pair_a(args.runs, args.blocks, args.warmup)))
    b_blocks = max(1, min(args.blocks, args.b_runs // 5))
    with tempfile.TemporaryDirectory(prefix="slmgraph-overhead-") as tmp:
        b = report(f"Pair B: SQLite checkpointer, durability=sync, one thread per run ({max(1, args.b_runs // b_blocks)} runs per block)",
                   asyncio.run(pair_b(args.b_runs, b_blocks, max(10, args.warmup // 10), Path(tmp))))
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"pair A ratio {a:.3f}, pair B ratio {b:.3f} (target <= {TARGET_RATIO:.2f} each)")
    print(f"peak memory (maxrss): {maxrss_mib:.1f} MiB   (after imports alone: {import_rss_mib:.1f} MiB)")

    if args.profile:
        print()
        print(asyncio.run(profile(args.runs, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
