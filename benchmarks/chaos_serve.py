"""Chaos on `slmgraph serve`: load, hang-ups and backend faults together, then a
SIGKILL and a restart with recovery, then a SIGTERM under load (RELIABILITY.md
rows 19, 20 and 26).

The quickstart graph is served by the real CLI (``slmgraph serve quickstart``) on
a loopback port with a SQLite checkpoint; its small model is the fault server
(``slmgraph.testing.fault_server``, another process) speaking Ollama's API, 20 % of its
replies faulted (503, 500, TCP reset, an HTML body). Every request is a review
(the rules route it to the sentiment skill) carrying a unique id, so the runs
table and the fault server's request log tell what happened to each one.

    .venv/bin/python benchmarks/chaos_serve.py                  # 60 s of load
    .venv/bin/python benchmarks/chaos_serve.py --duration 10    # a short run

Phases:
1. load: ``--clients`` (64) concurrent clients for ``--duration`` seconds, each
   sending requests (OpenAI or Ollama route, streaming or not, every one with an
   ``Idempotency-Key``); 30 % hang up mid-request, and half of those retry with
   the same key. /healthz is probed throughout.
2. SIGKILL of the server while the clients are in flight; a restart; its recovery
   finishes what the killed server had accepted; the clients that saw their
   connection die retry with their keys.
3. SIGTERM while a second load runs; the time to exit is the drain time. A last
   restart recovers what the drain left.

Prints: requests completed and their status codes; p99 /healthz latency during
the load; the longest event-loop stall (the server's
``slmgraph_event_loop_*stall_recent_seconds`` gauges, sampled every 2 s: wall
clock, and less the loop thread's wait for a CPU, which on a shared 2-core
machine is most of a wall-clock stall; the target is on the latter); runs executed twice (two runs
answered one request, or a cancelled run made a model call after it was
cancelled); runs left "running" after recovery; accepted runs lost (recorded but
neither done nor failed after recovery, or a retried key that got a new run);
the drain time. Targets: stall < 0.5 s, 0 twice, 0 stuck, 0 lost, drain within
the server's bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from slmgraph.testing import FaultServer

FAULTS = [{"kind": "status", "status": 503}, {"kind": "status", "status": 500}, {"kind": "reset"},
          {"kind": "malformed", "body": "html"}]  # fmt: skip
REPLY = '{"sentiment": "positive"}'
ID = re.compile(r"review ([0-9a-f]{12})")
STREAM_ERROR = re.compile(rb'(^|\n)(data: )?\{"error"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None,
               *, hang_up_after: float | None = None, timeout: float = 60.0) -> int | None:  # fmt: skip
    """One request on its own connection; the status code, or ``None`` when the
    connection failed or we hung up (``hang_up_after`` seconds after sending)."""
    payload = json.dumps(body).encode() if body is not None else b""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n")  # fmt: skip
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(head.encode() + payload)
        if hang_up_after is not None:
            await asyncio.sleep(hang_up_after)
            return None
        data = await asyncio.wait_for(reader.read(), timeout)  # to EOF: Connection: close
        if not data.startswith(b"HTTP/1.1 "):
            return None
        status = int(data.split(b" ", 2)[1])
        if status == 200 and STREAM_ERROR.search(data.split(b"\r\n\r\n", 1)[-1]):
            return 599  # a stream that reported a failure after its 200 header
        return status
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return None
    finally:
        writer.close()


@dataclass
class Load:
    port: int
    codes: Counter = field(default_factory=Counter)
    in_flight: dict[str, dict] = field(default_factory=dict)  # request id -> body of a full request
    hung_up: set[str] = field(default_factory=set)  # hung up and not retried
    retried: set[str] = field(default_factory=set)
    health: list[float] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)  # requests whose connection died (to retry after restart)
    stalls: list[float] = field(default_factory=list)  # the server's recent-stall gauge, sampled
    own_stalls: list[float] = field(default_factory=list)  # the same, less the wait for a CPU
    stopped: bool = False  # the server was signalled: start no new request
    phase: int = 0


def request(rid: str, rng: random.Random) -> tuple[str, dict, dict]:
    text = f"Please rate this review {rid}: the app is great and support answered in minutes"
    path = "/v1/chat/completions" if rng.random() < 0.5 else "/api/chat"
    body = {"model": "quickstart", "messages": [{"role": "user", "content": text}], "stream": rng.random() < 0.5}
    return path, body, {"Idempotency-Key": f"chaos-{rid}"}


async def client(load: Load, seed: int, until: float) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until and not load.stopped:
        rid = f"{rng.getrandbits(48):012x}"
        path, body, headers = request(rid, rng)
        if rng.random() < 0.30:
            await http(load.port, "POST", path, body, headers, hang_up_after=rng.uniform(0.05, 0.6))
            if rng.random() >= 0.5:
                load.hung_up.add(rid)
                continue
            load.retried.add(rid)
        load.in_flight[rid] = {"path": path, "body": body, "headers": headers}
        status = await http(load.port, "POST", path, body, headers)
        del load.in_flight[rid]
        if status is None:
            load.dead.append({"rid": rid, "path": path, "body": body, "headers": headers})
        else:
            load.codes[status] += 1


async def prober(load: Load, until: float) -> None:
    last_gauge = 0.0
    while time.monotonic() < until and not load.stopped:
        t0 = time.perf_counter()
        if await http(load.port, "GET", "/healthz", timeout=30) == 200:
            load.health.append(time.perf_counter() - t0)
        if t0 - last_gauge >= 2.0:
            await sample(load)
            last_gauge = t0
        await asyncio.sleep(0.05)


async def run_load(load: Load, clients: int, seconds: float, *, signal_at: float | None = None,
                   proc: subprocess.Popen | None = None, sig: int = signal.SIGKILL) -> dict:  # fmt: skip
    """Load for ``seconds``; with ``signal_at``, send ``sig`` to ``proc`` then (under
    load) and return what was in flight and when the process exited."""
    until = time.monotonic() + seconds
    load.phase += 1  # new seeds, so new request ids and keys
    tasks = [asyncio.create_task(client(load, load.phase * 10_000 + i, until)) for i in range(clients)]
    tasks.append(asyncio.create_task(prober(load, until)))
    out: dict = {}
    if signal_at is not None and proc is not None:
        await asyncio.sleep(signal_at)
        out["stall_s"] = await stall(load.port)
        await sample(load)
        out["in_flight"] = set(load.in_flight)
        sent = time.perf_counter()
        load.stopped = True
        proc.send_signal(sig)
        while proc.poll() is None:
            await asyncio.sleep(0.01)
        out["exit_s"] = time.perf_counter() - sent
    await asyncio.gather(*tasks)
    return out


async def sample(load: Load) -> None:
    for own, into in ((False, load.stalls), (True, load.own_stalls)):
        if (value := await stall(load.port, recent=True, own=own)) is not None:
            into.append(value)


async def stall(port: int, *, recent: bool = False, own: bool = False) -> float | None:
    """The server's longest event-loop stall since it started (or, ``recent``, in
    the last 10 s; ``own``: less its wait for a CPU), from /metrics."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        text = (await asyncio.wait_for(reader.read(), 30)).decode()
        writer.close()
    except (OSError, asyncio.TimeoutError):
        return None
    name = ("own_stall_recent" if own else "stall_recent") if recent else "stall_max"
    m = re.search(rf"^slmgraph_event_loop_{name}_seconds (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def start_server(port: int, db: Path, backend: str, workdir: Path) -> subprocess.Popen:
    config = workdir / "chaos.toml"
    config.write_text("retry_attempts = 3\n[small]\nbreaker_failures = 50\nbreaker_cooldown = 0.5\n")
    cmd = [sys.executable, "-c", "import sys; from slmgraph.cli import main; sys.exit(main())", "serve", "quickstart",
           "--config", str(config), "--small-provider", "ollama", "--small-model", "fault-model",
           "--ollama-host", backend, "--checkpoint", str(db), "--port", str(port), "--log-level", "error"]  # fmt: skip
    log = open(workdir / "server.log", "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=workdir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(workdir / 'server.log').read_text()[-3000:]}")
        if asyncio.run(http(port, "GET", "/healthz", timeout=5)) == 200:
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def runs(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(db, timeout=30) as c:
        c.row_factory = sqlite3.Row
        return c.execute("SELECT * FROM slmgraph_runs").fetchall()


def wait_recovered(db: Path, pid: int, timeout: float = 120.0) -> float:
    """Seconds until no run is left accepted/running by a process other than ``pid``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = [r for r in runs(db) if r["status"] in ("accepted", "running") and r["pid"] != pid]
        if not left:
            return time.monotonic() - t0
        time.sleep(0.25)
    return float("nan")


async def retry_dead(load: Load, concurrency: int = 16) -> Counter:
    """The clients whose connection died retry with their keys."""
    sem, codes = asyncio.Semaphore(concurrency), Counter()

    async def one(req: dict) -> None:
        async with sem:
            codes[await http(load.port, "POST", req["path"], req["body"], req["headers"])] += 1

    dead, load.dead = load.dead, []
    await asyncio.gather(*(one(r) for r in dead))
    return codes


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def analyse(db: Path, log: list[dict], load: Load, interrupted: set[str]) -> dict:
    by_rid: dict[str, list[sqlite3.Row]] = {}
    for r in runs(db):
        if (m := ID.search(r["request"])) is not None:
            by_rid.setdefault(m.group(1), []).append(r)
    calls: dict[str, list[float]] = {}
    for e in log:
        text = json.dumps(e.get("body") or {})
        if e["fault"] is None and (m := ID.search(text)) is not None:
            calls.setdefault(m.group(1), []).append(e["t"])
    twice = [rid for rid, rows in by_rid.items() if sum(r["status"] == "done" for r in rows) > 1]
    rerun = [rid for rid in load.hung_up if by_rid.get(rid) and all(r["status"] == "cancelled" for r in by_rid[rid])
             and any(t > max(r["updated"] for r in by_rid[rid]) + 1.0 for t in calls.get(rid, []))]  # fmt: skip
    stuck = [r["run_id"] for rows in by_rid.values() for r in rows if r["status"] in ("accepted", "running")]
    lost = [rid for rid in interrupted if by_rid.get(rid)
            and not any(r["status"] in ("done", "failed") for r in by_rid[rid])]  # fmt: skip
    lost += [rid for rid, rows in by_rid.items() if len(rows) > 1]  # a key that got a second run
    statuses = Counter(r["status"] for rows in by_rid.values() for r in rows)
    return {"twice": len(twice) + len(rerun), "stuck": len(stuck), "lost": len(set(lost)), "statuses": dict(statuses),
            "cancelled_rerun": len(rerun)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the main load (default 60)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05, help="the backend's seconds per reply")
    ap.add_argument("--drain-bound", type=float, default=10.0, help="the server's drain bound to check against")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    db = workdir / "chaos.sqlite"
    port = _free_port()
    with FaultServer.start(latency=args.latency, parallel=16, reply=REPLY) as backend:
        backend.faults(rate=0.2, kinds=FAULTS, seed=7)
        server = start_server(port, db, backend.url, workdir)
        load = Load(port)
        print(f"phase 1: {args.clients} clients for {args.duration:g}s, 30% hang up, 20% of backend replies faulted")
        first = asyncio.run(run_load(load, args.clients, args.duration + 0.5, signal_at=args.duration, proc=server))
        codes_load, health = Counter(load.codes), list(load.health)
        print("phase 2: SIGKILL under load; restart; recovery; the cut-off clients retry with their keys")
        server = start_server(port, db, backend.url, workdir)
        recovered_s = wait_recovered(db, server.pid)
        retry_codes = asyncio.run(retry_dead(load))
        stuck_after_kill = len([r for r in runs(db) if r["status"] in ("accepted", "running")])
        second_s = max(3.0, min(10.0, args.duration / 3))
        print(f"phase 3: {second_s:g}s of load, SIGTERM after {second_s / 2:g}s; restart; recovery")
        load.codes.clear()
        load.stopped = False
        stalls_load, load.stalls = list(load.stalls), []
        own_load, load.own_stalls = list(load.own_stalls), []
        third = asyncio.run(run_load(load, args.clients, second_s, signal_at=second_s / 2, proc=server,
                                     sig=signal.SIGTERM))  # fmt: skip
        codes_term = Counter(load.codes)
        server = start_server(port, db, backend.url, workdir)
        wait_recovered(db, server.pid)
        retry_codes += asyncio.run(retry_dead(load))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        result = analyse(db, backend.log(), load, first["in_flight"] | third["in_flight"])
    print()
    print(f"requests completed in phase 1: {sum(codes_load.values())}  codes: {dict(sorted(codes_load.items()))}")
    print(f"hung up: {len(load.hung_up)} not retried, {len(load.retried)} retried with the same key")
    print(f"p99 /healthz latency during the load: {p99(health) * 1000:.1f} ms over {len(health)} probes")
    longest = max(stalls_load, default=float("nan"))
    own = max(own_load, default=float("nan"))
    print(f"throughput in phase 1: {sum(codes_load.values()) / args.duration:.1f} completed requests/s")
    print(f"longest event-loop stall during the load: {own:.3f}s less the wait for a CPU, {longest:.3f}s "
          f"wall clock (server gauges over 10 s windows; since start, warm-up included: {first['stall_s']}s)")
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"in flight at the SIGKILL: {len(first['in_flight'])}; recovery took {recovered_s:.1f}s; "
          f"retries of cut-off requests: {dict(retry_codes)}")  # fmt: skip
    print(f"runs left running after recovery from the SIGKILL: {stuck_after_kill}")
    print(f"phase 3 codes: {dict(sorted(codes_term.items()))}; in flight at SIGTERM: {len(third['in_flight'])}")
    print(f"time to drain on SIGTERM under load: {third['exit_s']:.2f}s (bound {args.drain_bound:g}s)")
    print(f"runs by final status: {result['statuses']}")
    print(f"runs executed twice: {result['twice']}  runs stuck: {result['stuck']}  accepted runs lost: {result['lost']}")
    ok = (own < 0.5 and result["twice"] == 0 and result["stuck"] == 0 and result["lost"] == 0
          and third["exit_s"] <= args.drain_bound + 1.0)  # fmt: skip
    print("targets met" if ok else "TARGETS MISSED", f"(work dir {workdir})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
