"""Figures for reliability rows 1-7: each transport fault, injected R times by the fault
server, through the real Ollama and OpenAI clients with the retry layer.

For each fault and backend it prints: time to the typed error (p50/p95, real sleeps,
``RetryPolicy(attempts=3, initial_s=0.05, max_s=0.2)``), requests the server saw per
logical call, the share of calls that ended in a typed slmgraph error (or succeeded
after a retry), incomplete replies accepted as final, and the server's open
connections after the model was closed.

Usage::

    .venv/bin/python benchmarks/transport_faults.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slmgraph import Message, OllamaModel, OpenAIModel, RetryingModel, RetryPolicy, SlmGraphError  # noqa: E402
from slmgraph.testing import FaultServer  # noqa: E402

HI = [Message("user", "hi")]
CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
ROWS = [
    ("1 refused", None, False),
    ("2 black hole, 1 try", {"kind": "hang"}, False, 1),
    ("2 black hole", {"kind": "hang"}, False),
    ("3 stall mid-stream", {"kind": "stall", "after": 1}, True),
    ("4 HTTP 503", {"kind": "status", "status": 503}, False),
    ("4 HTTP 500", {"kind": "status", "status": 500}, False),
    ("5 429 Retry-After 1", {"kind": "status", "status": 429, "retry_after": 1}, False),
    ("6 200 + HTML", {"kind": "malformed"}, False),
    ("6 200 + bad JSON", {"kind": "malformed", "body": "json"}, False),
    ("7 cut reply", {"kind": "cut"}, False),
    ("7 cut stream", {"kind": "cut", "after": 1}, True),
    ("7 stream w/o done", {"kind": "cut", "after": 1, "clean": True}, True),
]


def make(server: FaultServer, backend: str, timeout: float):
    kw = {"timeout": timeout, "idle_timeout": timeout}
    if backend == "ollama":
        return OllamaModel("fault-model", host=server.url, **kw)
    return OpenAIModel("fault-model", base_url=server.openai_url, **kw)


async def one_row(server, backend, fault, stream, repeats, timeout, attempts) -> dict:
    model = RetryingModel(make(server, backend, timeout), RetryPolicy(attempts=attempts, initial_s=0.05, max_s=0.2))
    times, typed, accepted, succeeded = [], 0, 0, 0
    server.reset()
    if fault is None:
        server.down()
    for _ in range(repeats):
        if fault is not None:
            server.faults([fault] * 3)  # every attempt of this call is faulted
        started = time.perf_counter()
        try:
            if stream:
                finals = [c.reply async for c in model.stream(HI) if c.reply is not None]
                accepted += bool(finals)
            else:
                await model.complete(HI)
            succeeded += 1
        except SlmGraphError:
            typed += 1
        except Exception as exc:  # noqa: BLE001 - counted as untyped
            print(f"    untyped: {exc!r}")
        times.append(time.perf_counter() - started)
        server.faults([])  # drop leftovers (a streamed call is not retried after its first chunk)
        server.reset()
        if fault is None:
            server.down()
    await model.aclose()
    server.up()
    await asyncio.sleep(0.1)
    times.sort()
    return {
        "p50": statistics.median(times), "p95": times[min(len(times) - 1, int(0.95 * len(times)))],
        "typed": typed / repeats, "accepted": accepted, "succeeded": succeeded,
        "open": server.stats()["open_connections"],
    }  # fmt: skip


async def main(args) -> None:
    with FaultServer.start() as server:
        print(f"{args.repeats} calls per row; model timeout {args.timeout:g} s; retry: 3 attempts, backoff 0.05-0.2 s")
        print(f"{'row':<22} {'backend':<7} {'p50 s':>6} {'p95 s':>6} {'req/call':>8} {'typed err':>9} "
              f"{'accepted incomplete':>19} {'open conns after':>16}")  # fmt: skip
        for name, fault, stream, *more in ROWS:
            attempts = more[0] if more else 3
            for backend in ("ollama", "openai"):
                before = 0
                r = await one_row(server, backend, fault, stream, args.repeats, args.timeout, attempts)
                # requests per call: re-run one call and count what the server saw
                server.reset()
                if fault is None:
                    per_call = "-"  # refused: nothing reaches the server
                else:
                    server.faults([fault] * 3)
                    model = RetryingModel(
                        make(server, backend, args.timeout), RetryPolicy(attempts=attempts, initial_s=0.0, max_s=0.0)
                    )
                    try:
                        if stream:
                            [c async for c in model.stream(HI)]
                        else:
                            await model.complete(HI)
                    except Exception:  # noqa: BLE001
                        pass
                    await model.aclose()
                    per_call = str(len(server.log(CHAT[backend])) - before)
                print(f"{name:<22} {backend:<7} {r['p50']:>6.3f} {r['p95']:>6.3f} {per_call:>8} {r['typed']:>9.0%} "
                      f"{r['accepted']:>19} {r['open']:>16}")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=0.5)
    asyncio.run(main(ap.parse_args()))
