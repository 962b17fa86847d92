"""Latency of the embedded engine through slmgraph, against raw llama-cpp-python.

Both sides run the same schema-constrained triage prompt on the same loaded
SmolLM2-135M-Instruct model in this process, alternating calls:

* slmgraph: ``LlamaCppModel.complete`` (thread hop off the event loop, lock,
  reply parsing, usage);
* raw: ``Llama.create_chat_completion`` called directly with the same messages,
  the same JSON-schema ``response_format`` and temperature 0.

Prints p50/p95 latency of each, their ratio, tokens/s, the first-call cost and
peak memory.

Usage::

    .venv/bin/python benchmarks/embedded_latency.py [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slmgraph import LlamaCppModel, ModelSettings  # noqa: E402
from slmgraph.graphs import triage_skill  # noqa: E402
from slmgraph.skills import TextInput, skill_messages  # noqa: E402

TICKETS = [
    "My card still has not arrived after two weeks.",
    "I think someone stole my card, please block it.",
    "Why was I charged twice for one coffee?",
    "How do I change my address in the app?",
]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def main(calls: int) -> int:
    skill = triage_skill()
    schema = skill.output_schema()
    model = LlamaCppModel()
    t0 = time.perf_counter()
    llama = model.llama  # loads the model (once per process)
    load_s = time.perf_counter() - t0
    settings = ModelSettings(temperature=0.0)

    prompts = [skill_messages(skill, TextInput(text=t)) for t in TICKETS]
    t0 = time.perf_counter()
    await model.complete(prompts[0], schema=schema, settings=settings)
    first_s = time.perf_counter() - t0

    ours: list[float] = []
    raw: list[float] = []
    tokens = 0
    for i in range(calls):
        msgs = prompts[i % len(prompts)]
        # llama.cpp reuses the evaluated prefix of the previous prompt; reset before
        # each timed call so neither side inherits the other's identical prompt.
        llama.reset()
        t0 = time.perf_counter()
        reply = await model.complete(msgs, schema=schema, settings=settings)
        ours.append(time.perf_counter() - t0)
        tokens += reply.usage.completion_tokens
        llama.reset()
        t0 = time.perf_counter()
        llama.create_chat_completion(
            messages=[m.to_dict() for m in msgs],
            response_format={"type": "json_object", "schema": schema},
            temperature=0.0,
            max_tokens=256,
        )
        raw.append(time.perf_counter() - t0)
        llama.reset()

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: {model.name} ({model.model_path.name}), n_ctx {model.n_ctx}; {calls} calls each, alternating")
    print(f"load {load_s:.2f} s; first call {first_s:.2f} s (one-time warm-up of llama.cpp's first large batch)")
    print(f"slmgraph LlamaCppModel   p50 {statistics.median(ours):.3f} s   p95 {pct(ours, 0.95):.3f} s")
    print(f"raw llama-cpp-python     p50 {statistics.median(raw):.3f} s   p95 {pct(raw, 0.95):.3f} s")
    print(f"ratio slmgraph / raw (p50): {statistics.median(ours) / statistics.median(raw):.3f}")
    print(f"throughput: {tokens / sum(ours):.1f} completion tokens per second of call time (prompt evaluation included)")
    print(f"peak memory (maxrss): {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    sys.exit(asyncio.run(main(p.parse_args().calls)))
