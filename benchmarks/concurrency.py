"""Concurrent graph runs against a model server with P slots and latency L.

The fault server (another process) answers Ollama ``/api/chat`` after ``L`` seconds
in one of ``P`` slots, like an Ollama with ``OLLAMA_NUM_PARALLEL=P``. The physical
limit is ``P / L`` calls per second; each graph run here makes exactly one model call
(one skill, so no router call), so the limit is ``P / L`` runs per second.

**Load.** For N = 1, 8, 64, 256 concurrent runs it prints throughput, the ratio to
``P / L``, p50/p95/p99 run latency, errors, lost runs (never returned), state mix-ups
(a run whose output echoes another run's request) and the process's peak RSS. It
also prints the start-up ramp (until the server sees the batch's first request: every
run does its LangGraph set-up before the first one's request is written) and the
ratio over the time after it. The
client holds at most 2P calls in flight per endpoint (``ConcurrencyLimit``): P being
served and P waiting in the server's queue, so a slot never idles while our next
request is built, and the rest of the burst queues on our side, far below the
server's queue limit (no 503s). Target: ratio >= 0.95 at N >= 8P, no errors, none lost.

**Faults.** Then N runs with 20% of responses faulted (503, 500, 429, reset,
malformed body, cut stream, black hole), on a primary and on a fallback server that
fail independently, and the success rate with no retries, with retries, and with
retries and fallback.

Usage::

    .venv/bin/python benchmarks/concurrency.py [--latency 0.1] [--parallel 2] [--fault-runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel  # noqa: E402

from slmgraph import (  # noqa: E402
    ConcurrencyLimit,
    FallbackModel,
    GuardedModel,
    OllamaModel,
    RetryingModel,
    RetryPolicy,
    Skill,
    SlmGraphError,
    build_graph,
)
from slmgraph.testing import FaultServer  # noqa: E402


class Echo(BaseModel):
    text: str


ECHO = Skill(name="echo", description="repeat the request", instructions="Repeat the request.", output_type=Echo)
FAULTS = [
    {"kind": "status", "status": 503}, {"kind": "status", "status": 500}, {"kind": "status", "status": 429},
    {"kind": "reset"}, {"kind": "malformed"}, {"kind": "cut"}, {"kind": "hang"},
]  # fmt: skip


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_batch(graph, n: int, tag: str, deadline_s: float) -> dict:
    requests = [f"{tag} request {i}" for i in range(n)]
    latencies: list[float] = []

    async def one(text: str):
        started = time.perf_counter()
        try:
            result = await graph.ainvoke(text)
        finally:
            latencies.append(time.perf_counter() - started)
        return result

    t0 = time.time()
    tasks = [asyncio.ensure_future(one(r)) for r in requests]
    started = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    wall = time.perf_counter() - started
    for t in pending:
        t.cancel()
    errors = mixups = ok = 0
    for req, task in zip(requests, tasks, strict=True):
        if task not in done:
            continue
        if task.exception() is not None:
            errors += 1
            if not isinstance(task.exception(), SlmGraphError):
                print(f"  untyped error: {task.exception()!r}")
            continue
        result = task.result()
        if result.status == "answered" and (result.output_json or {}).get("text") == req:
            ok += 1
        else:
            mixups += 1
    return {"n": n, "wall": wall, "ok": ok, "errors": errors, "lost": len(pending), "mixups": mixups,
            "latencies": latencies, "t0": t0}  # fmt: skip


async def load(args) -> None:
    p, lat = args.parallel, args.latency
    limit = p / lat
    with FaultServer.start(latency=lat, parallel=p, max_queue=args.max_queue, reply='{"text": "$USER"}') as server:
        backend = OllamaModel("fault-model", host=server.url, timeout=30.0)
        cap = args.client_limit or 2 * p
        small = RetryingModel(GuardedModel(backend, limit=ConcurrencyLimit(cap)), RetryPolicy(attempts=3))
        graph = build_graph([ECHO], models={"small": small}, checkpoint=None)
        await run_batch(graph, p, "warmup", 60)
        print(f"load: P={p} slots, L={lat:g} s, physical limit P/L = {limit:g} runs/s, server queue "
              f"{args.max_queue}, client limit {cap} in flight")  # fmt: skip
        print(f"{'N':>5} {'runs/s':>8} {'ratio':>6} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} "
              f"{'errors':>6} {'lost':>5} {'mixups':>6} {'503s':>5} {'1st req s':>9} {'ratio after 1st':>15} {'peak RSS MB':>11}")  # fmt: skip
        for n in args.n:
            before, seen = server.stats()["rejected"], len(server.log("/api/chat"))
            r = await run_batch(graph, n, f"n{n}", deadline_s=max(60.0, 5 * n / limit))
            rejected = server.stats()["rejected"] - before
            # Start-up ramp: how long until the server saw this batch's first request.
            ramp = server.log("/api/chat")[seen]["t"] - r["t0"]
            tput = r["ok"] / r["wall"]
            print(f"{n:>5} {tput:>8.2f} {tput / limit:>6.3f} {pct(r['latencies'], .5):>7.3f} "
                  f"{pct(r['latencies'], .95):>7.3f} {pct(r['latencies'], .99):>7.3f} {r['errors']:>6} "
                  f"{r['lost']:>5} {r['mixups']:>6} {rejected:>5} {ramp:>9.3f} {r['ok'] / (r['wall'] - ramp) / limit:>15.3f} {peak_rss_mb():>11.1f}")  # fmt: skip
        await small.aclose()


async def faults(args) -> None:
    n, p, lat = args.fault_runs, args.parallel, args.fault_latency
    with (
        FaultServer.start(latency=lat, parallel=p, reply='{"text": "$USER"}') as a,
        FaultServer.start(latency=lat, parallel=p, reply='{"text": "$USER"}') as b,
    ):  # fmt: skip
        print(f"\nfaults: {n} concurrent runs, 20% of responses faulted ({', '.join(f['kind'] if f['kind'] != 'status' else str(f['status']) for f in FAULTS)}),"
              f" P={p}, L={lat:g} s, model timeout {args.timeout:g} s")  # fmt: skip
        policy = RetryPolicy(attempts=3, initial_s=0.05, max_s=0.5)

        def endpoint(server) -> GuardedModel:
            return GuardedModel(OllamaModel("fault-model", host=server.url, timeout=args.timeout), limit=ConcurrencyLimit(p))

        def chain() -> FallbackModel:
            return FallbackModel([RetryingModel(endpoint(a), policy), RetryingModel(endpoint(b), policy)])

        setups = {
            "no retries": (lambda: RetryingModel(endpoint(a), RetryPolicy(attempts=1)), False),
            "retries (3 attempts)": (lambda: RetryingModel(endpoint(a), policy), False),
            "retries + fallback": (chain, False),
            "primary down, fallback": (chain, True),
        }  # fmt: skip
        for name, (make, primary_down) in setups.items():
            for server in (a, b):
                server.reset()
                server.faults(rate=0.2, kinds=FAULTS, seed=7)
            if primary_down:
                a.down()
            model = make()
            graph = build_graph([ECHO], models={"small": model}, checkpoint=None)
            r = await run_batch(graph, n, "fault", deadline_s=120.0)
            sent = len(a.log("/api/chat")) + len(b.log("/api/chat"))
            faulted = sum(1 for s in (a, b) for e in s.log("/api/chat") if e["fault"])
            by_fallback = sum(model.served_by) if isinstance(model, FallbackModel) else 0
            print(f"  {name:<22} success {r['ok'] / n:7.2%}  errors {r['errors']:>3}  lost {r['lost']}  "
                  f"mixups {r['mixups']}  requests sent {sent} ({faulted} faulted, {faulted / max(sent, 1):.0%})  "
                  f"answered by fallback {by_fallback}  wall {r['wall']:.1f} s")  # fmt: skip
            await model.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.1, help="L: seconds per model call")
    ap.add_argument("--parallel", type=int, default=2, help="P: server slots")
    ap.add_argument("--max-queue", type=int, default=16, help="server queue before 503")
    ap.add_argument("--client-limit", type=int, default=0, help="calls in flight on our side (default 2P)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--fault-runs", type=int, default=200)
    ap.add_argument("--fault-latency", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=0.5, help="model timeout in the fault run (black holes)")
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    if not args.skip_load:
        asyncio.run(load(args))
    if args.fault_runs:
        asyncio.run(faults(args))


if __name__ == "__main__":
    main()
