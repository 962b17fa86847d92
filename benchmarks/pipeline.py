"""Overhead of slmgraph's skill nodes in a pipeline with a fan-out, over a hand-written graph.

Both graphs have the same shape and do equivalent trivial work:

    START -> find (1 model call, 10 items) -> Send x10: rate (1 call each) -> summary (1 call) -> END

* slmgraph: three :func:`~slmgraph.skill_node` nodes and :func:`~slmgraph.fan_out` in a
  user's own ``StateGraph`` (state: ``SLMState`` plus three fields), the same instant
  model function behind a ``Model``;
* raw: three hand-written async nodes that build the same prompt, call the same
  function, validate with the same pydantic output types, append a ledger entry
  each, and a ``Send`` fan-out; the same channels and reducers (``operator.add``).

Both edge functions are coroutines (so neither side pays LangGraph's worker-thread
hop for a sync edge). No checkpointer on either side; ``ainvoke`` in one event
loop; alternating timed blocks, CPU time, the median of paired block ratios.

Usage::

    .venv/bin/python benchmarks/pipeline.py [--runs 400] [--blocks 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Send  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from slmgraph import SLMState, Skill, fan_out, skill_node  # noqa: E402
from slmgraph.graphs import add_run_list  # noqa: E402
from slmgraph.models import Model, ModelReply, Usage  # noqa: E402

TARGET_RATIO = 1.10
FAN_OUT = 10
DOC = " ".join(f"Clause {i} says something." for i in range(FAN_OUT))


class Items(BaseModel):
    items: list[str]


class Rating(BaseModel):
    risk: Literal["low", "high"]


class Summary(BaseModel):
    summary: str


def instant(messages: Any) -> dict:
    """The model function both graphs call: constant-time JSON, no latency."""
    system = messages[0]["content"] if isinstance(messages[0], dict) else messages[0].content
    if system.startswith("Find"):
        return {"items": [f"Clause {i} says something." for i in range(FAN_OUT)]}
    if system.startswith("Rate"):
        return {"risk": "low"}
    return {"summary": "all low"}


class InstantModel(Model):
    name = "instant"
    provider = "test"

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        started = time.perf_counter()
        value = instant(messages)
        text = json.dumps(value)
        usage = Usage(sum(len(m.content) // 3 for m in messages), len(text) // 3)
        return ModelReply(text, self.name, self.provider, parsed=value, usage=usage, latency_s=time.perf_counter() - started)


# --------------------------------------------------------------------------- slmgraph

FIND = Skill(name="find", description="find items", instructions="Find the items.", output_type=Items)
RATE = Skill(name="rate", description="rate an item", instructions="Rate the item.", output_type=Rating)
SUMMARY = Skill(name="summary", description="summarise ratings", instructions="Summarise the ratings.", output_type=Summary)


class PipeState(SLMState, total=False):
    doc: str
    found: dict | None
    ratings: Annotated[list[dict], add_run_list]
    summary: dict | None


def slm_graph():
    models = {"small": InstantModel()}
    b = StateGraph(PipeState)
    b.add_node("find", skill_node(FIND, models=models, input="doc", output="found", starts_run=PipeState))
    b.add_node("rate", skill_node(RATE, models=models, input="item", output="ratings", collect=True))
    b.add_node("summary", skill_node(SUMMARY, models=models, input=lambda s: json.dumps(s["ratings"]), output="summary"))
    b.add_edge(START, "find")
    b.add_conditional_edges("find", fan_out(lambda s: s["found"]["items"], "rate", empty="summary"), ["rate", "summary"])
    b.add_edge("rate", "summary")
    b.add_edge("summary", END)
    return b.compile(name="slm-pipeline")


# --------------------------------------------------------------------------- raw LangGraph


class RawState(TypedDict, total=False):
    doc: str
    found: dict | None
    ratings: Annotated[list[dict], operator.add]
    summary: dict | None
    ledger: Annotated[list[dict], operator.add]
    escalations: Annotated[list[dict], operator.add]


def _call(node: str, system: str, text: str, output: type[BaseModel]) -> tuple[BaseModel, dict]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    started = time.perf_counter()
    reply = json.dumps(instant(messages))
    entry = {
        "node": node, "skill": node, "model": "instant", "provider": "test", "tier": "small",
        "prompt_tokens": sum(len(m["content"]) // 3 for m in messages), "completion_tokens": len(reply) // 3,
        "latency_s": time.perf_counter() - started, "cost_usd": 0.0, "escalation_reason": None,
    }  # fmt: skip
    return output.model_validate_json(reply), entry


async def raw_find(state: RawState) -> RawState:
    out, entry = _call("find", "Find the items.", state["doc"], Items)
    return {"found": out.model_dump(mode="json"), "ledger": [entry]}


async def raw_rate(state: dict) -> RawState:
    out, entry = _call("rate", "Rate the item.", state["item"], Rating)
    return {"ratings": [{"input": state["item"], "output": out.model_dump(mode="json")}], "ledger": [entry]}


async def raw_summary(state: RawState) -> RawState:
    out, entry = _call("summary", "Summarise the ratings.", json.dumps(state["ratings"]), Summary)
    return {"summary": out.model_dump(mode="json"), "ledger": [entry]}


async def raw_fan_out(state: RawState) -> list[Send] | str:
    return [Send("rate", {"item": item}) for item in state["found"]["items"]] or "summary"


def raw_graph():
    b = StateGraph(RawState)
    b.add_node("find", raw_find)
    b.add_node("rate", raw_rate)
    b.add_node("summary", raw_summary)
    b.add_edge(START, "find")
    b.add_conditional_edges("find", raw_fan_out, ["rate", "summary"])
    b.add_edge("rate", "summary")
    b.add_edge("summary", END)
    return b.compile(name="raw-pipeline")


# --------------------------------------------------------------------------- timing


async def run(graph, check) -> None:
    state = await graph.ainvoke({"doc": DOC})
    assert len(state["ratings"]) == FAN_OUT and state["summary"] == {"summary": "all low"}, state
    assert len(state["ledger"]) == FAN_OUT + 2
    check(state)


async def block(graph, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await run(graph, lambda s: None)
    return (time.process_time() - start) / n


async def measure(runs: int, blocks: int, warmup: int) -> tuple[list[float], list[float]]:
    slm, raw = slm_graph(), raw_graph()
    await block(slm, warmup)
    await block(raw, warmup)
    per = max(1, runs // blocks)
    slm_t: list[float] = []
    raw_t: list[float] = []
    for i in range(blocks):
        order = [(slm, slm_t), (raw, raw_t)]
        for graph, out in (order if i % 2 == 0 else order[::-1]):
            out.append(await block(graph, per))
    return slm_t, raw_t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=400)
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--warmup", type=int, default=40)
    args = p.parse_args(argv)
    slm_t, raw_t = asyncio.run(measure(args.runs, args.blocks, args.warmup))
    ratio = statistics.median(s / r for s, r in zip(slm_t, raw_t))
    nodes = FAN_OUT + 2
    slm, raw = statistics.median(slm_t), statistics.median(raw_t)
    print(f"python {sys.version.split()[0]}; pipeline find -> {FAN_OUT} x rate (Send) -> summary; "
          f"{args.blocks} alternating blocks x {max(1, args.runs // args.blocks)} runs; CPU time, median of blocks")
    print(f"slmgraph skill nodes per run: {slm * 1e6:10.1f} us   (blocks min {min(slm_t) * 1e6:.1f})")
    print(f"raw LangGraph per run:        {raw * 1e6:10.1f} us   (blocks min {min(raw_t) * 1e6:.1f})")
    print(f"overhead per node:            {(slm - raw) / nodes * 1e6:10.1f} us   ({nodes} node executions per run)")
    print(f"ratio slmgraph / raw:         {ratio:10.3f}      target <= {TARGET_RATIO:.2f}: {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
