"""Scale-out figures: serve processes on one PostgreSQL, batch overhead, Ray vs local.

1. **Serve on one PostgreSQL.** ``slmgraph serve --workers K`` (K = 1, 2, 4) on one
   database started here (tests/pg_server.py), against the fault server with P
   slots at latency L; N concurrent chat requests, each on its own conversation.
   Prints throughput / (P/L), errors, runs lost (no ``done`` run in the database)
   and runs duplicated (more than one run, or more than one model request, for a
   conversation). Target: >= 0.95, 0 errors, 0 lost, 0 duplicated.
2. **Batch overhead.** ``run_batch`` (what ``slmgraph batch`` runs) on R rows with an
   instant model, against the hand-written LangGraph graph of the same shape from
   benchmarks/overhead.py run with ``abatch`` (same concurrency), CPU time per row,
   without a checkpointer and with SQLite on both sides (the baseline with
   ``durability="sync"``). Target: <= 1.2x. Then ``run_batch`` against the fault
   server: rows/s / (P/L), target >= 0.95.
3. **Ray against local.** The Ray executor with 2 workers against the local
   executor on the same rows, with a fault server whose slots are not the limit,
   on a SQLite file and on PostgreSQL (``--ray-stores``).

Each model entry allows ``max_parallel = 2P`` calls in flight (P served, P in the
server's queue), as benchmarks/concurrency.py does, so a slot never idles while
the next request is built. Each serve process runs ``max_concurrency = 2 x
max_parallel`` graphs at once (the ratio of serve's defaults, 8 runs for 4 calls)
and queues the other requests: runs admitted far beyond what the model hosts take
only interleave their database steps on the event loop and delay every model
call (with 128 admitted, the first model call of a 160-request burst left 1.9 s
after the burst; with 16, 0.6 s). The load generator speaks plain HTTP/1.1 on
asyncio streams, one connection per request, so its own CPU (on the same two
cores) delays the servers as little as it can. Peak memory: this process, and its
largest child.

Usage::

    .venv/bin/python benchmarks/scale_out.py [--part 1 2 3] [--rows 10000] [--requests 160]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from pydantic import BaseModel  # noqa: E402

from slmgraph import Skill, build_graph  # noqa: E402
from slmgraph.config import load_config  # noqa: E402
from slmgraph.testing import FaultServer  # noqa: E402


class Echo(BaseModel):
    text: str


ECHO = Skill(name="echo", description="repeat the request", instructions="Repeat the request.", output_type=Echo)


def echo_graph(models, *, config=None, prices=None):
    """One skill on the configured small model: one model call per run."""
    return build_graph([ECHO], models=models, prices=prices, checkpoint=config.checkpoint, name="echo")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children (Linux /proc)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in [str(pid), *children]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, url: str, parallel: int, checkpoint: str, max_starting: int | None = None) -> Path:
    starting = "" if max_starting is None else f"max_starting = {max_starting}\n"
    path.write_text(
        f'checkpoint = "{checkpoint}"\n\n[small]\nprovider = "ollama"\nmodel = "fault-model"\n'
        f'host = "{url}"\nmax_parallel = {parallel}\ntimeout = 30\n\n'
        f"[serve]\nmax_concurrency = {2 * parallel}\nmax_queue = 1024\n{starting}"
    )
    return path


# --------------------------------------------------------------------------- 1. serve


_SERVE = (
    "import sys; sys.path.insert(0, {here!r}); import scale_out; from slmgraph.graphs import register_graph; "
    "register_graph('echo', scale_out.echo_graph); from slmgraph.cli import main; sys.exit(main(sys.argv[1:]))"
)


async def _post(port: int, body: bytes, conversation: str) -> int:
    """One ``POST /v1/chat/completions`` on its own connection; the status code.

    Plain HTTP/1.1 on asyncio streams: the load generator shares the machine's two
    cores with the servers, and httpx spends about a millisecond of CPU per request
    (more with 160 requests interleaved), which would delay the servers' first runs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Conversation-Id: {conversation}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        await reader.read()  # headers and body, to the end (Connection: close)
        return status
    finally:
        writer.close()


async def _load(port: int, n: int, tag: str) -> tuple[float, int, list[str]]:
    async def one(i: int) -> bool:
        body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": f"{tag} request {i}"}]}).encode()
        return await asyncio.wait_for(_post(port, body, f"{tag}-{i}"), 120) == 200

    started = time.perf_counter()
    ok = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.perf_counter() - started
    good = [f"{tag}-{i}" for i, v in enumerate(ok) if v is True]
    return wall, n - len(good), good


def part_serve(args, pg) -> None:
    import httpx
    import psycopg

    p, lat, n = args.parallel, args.latency, args.requests
    limit = p / lat
    print(f"\n1. serve on one PostgreSQL: fault server P={p} slots, L={lat:g} s, P/L = {limit:g} runs/s; "
          f"{n} concurrent requests per run; each process: max_parallel {2 * p}, max_concurrency {4 * p}")  # fmt: skip
    print(f"   load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'processes':>9} {'runs/s':>8} {'ratio':>6} {'errors':>6} {'lost':>5} {'duplicated':>10} {'server CPU ms/run':>17} "
          f"{'db CPU ms/run':>13} {'first call s':>12}")  # fmt: skip
    postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    with FaultServer.start(latency=lat, parallel=p, max_queue=4096, reply='{"text": "$USER"}') as fault:
        for k in args.processes:
            dsn = pg.createdb(f"serve_{k}_{int(time.time())}")
            work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
            cfg = write_config(work / "slm.toml", fault.url, 2 * p, dsn, args.max_starting)
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE.format(here=str(HERE)), "serve", "echo", "--config", str(cfg),
                 "--port", str(port), "--workers", str(k), "--log-level", "warning"],
                stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"),
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"serve --workers {k} did not start; see {work / 'serve.log'}")
                    time.sleep(0.2)
                # The kernel spreads these unevenly (some processes may get none); each process readies
                # itself (pool, models) before it accepts, so none pays for that during the burst.
                asyncio.run(_load(port, 4 * p * k, f"warm{k}"))
                fault.reset()
                cpu0, db0, t0 = tree_cpu_s(proc.pid), tree_cpu_s(postmaster), time.time()
                wall, errors, good = asyncio.run(_load(port, n, f"k{k}"))
                cpu_ms = (tree_cpu_s(proc.pid) - cpu0) / n * 1000
                db_ms = (tree_cpu_s(postmaster) - db0) / n * 1000
                with psycopg.connect(dsn) as conn:
                    rows = conn.execute(
                        "SELECT thread_id, status FROM slmgraph_runs WHERE thread_id LIKE %s", (f"echo/k{k}-%",)
                    ).fetchall()
                done: dict[str, int] = {}
                for thread, status in rows:
                    done[thread.split("/", 1)[1]] = done.get(thread.split("/", 1)[1], 0) + (status == "done")
                lost = sum(1 for i in range(n) if done.get(f"k{k}-{i}", 0) == 0)
                sent: dict[str, int] = {}
                calls = fault.log("/api/chat")
                first = min((e["t"] for e in calls), default=t0) - t0  # the burst's start-up
                for entry in calls:  # one model request per run, by its user text
                    body = entry.get("body") if isinstance(entry.get("body"), dict) else {}
                    text = json.dumps((body.get("messages") or [{}])[-1].get("content"))
                    sent[text] = sent.get(text, 0) + 1
                dup_runs = sum(1 for v in done.values() if v > 1)
                dup_calls = sum(1 for v in sent.values() if v > 1)
                tput = len(good) / wall
                print(f"{k:>9} {tput:>8.2f} {tput / limit:>6.3f} {errors:>6} {lost:>5} {dup_runs + dup_calls:>10} {cpu_ms:>17.1f} {db_ms:>13.1f} {first:>12.2f}")
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"   peak RSS of the server processes: {peak_mb(resource.RUSAGE_CHILDREN):.0f} MiB; "
          f"load average after: {os.getloadavg()[0]:.1f}")


# --------------------------------------------------------------------------- 2. batch overhead


def _rows(path: Path, n: int, text: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "input": f"{text} {i}"}) + "\n")
    return path


async def _batch_cpu(graph, rows: Path, out: Path, concurrency: int) -> tuple[float, float]:
    from slmgraph.batch import GraphSource, LocalExecutor, run_batch
    from slmgraph.config import Config

    c0, w0 = time.process_time(), time.perf_counter()
    summary = await run_batch(GraphSource("-", Config()), rows, out, concurrency=concurrency,
                              executor=LocalExecutor(graph), progress=False)  # fmt: skip
    assert summary.rows == summary.statuses.get("answered", 0), summary.statuses
    return time.process_time() - c0, time.perf_counter() - w0


async def _abatch_cpu(raw, n: int, text: str, concurrency: int, durable: bool) -> tuple[float, float]:
    inputs = [{"request": f"{text} {i}"} for i in range(n)]
    configs = [{"configurable": {"thread_id": f"raw-{i}"}, "max_concurrency": concurrency} for i in range(n)]
    kwargs = {"durability": "sync"} if durable else {}
    c0, w0 = time.process_time(), time.perf_counter()
    out = await raw.abatch(inputs, configs, **kwargs)
    assert all(o["status"] == "answered" for o in out)
    return time.process_time() - c0, time.perf_counter() - w0


def part_overhead(args) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    import overhead

    n, conc = args.rows, args.concurrency
    text = "I love this phone, the battery lasts for days"
    print(f"\n2. batch overhead: {n} rows, instant model, concurrency {conc}, CPU time per row")
    print(f"   load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'store':>14} {'slmgraph batch µs':>17} {'raw abatch µs':>13} {'ratio':>6} {'batch rows/s':>12} {'abatch rows/s':>13}")
    for store in args.stores:
        work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
        rows = _rows(work / "in.jsonl", n if store == "none" else args.sqlite_rows, text)
        m = n if store == "none" else args.sqlite_rows

        async def both():
            if store == "none":
                raw_cpu = await _abatch_cpu(overhead.raw_graph(), m, text, conc, False)
                slm = await _batch_cpu(overhead.slm_graph(checkpoint=None), rows, work / "out.jsonl", conc)
                return slm, raw_cpu
            async with AsyncSqliteSaver.from_conn_string(str(work / "raw.sqlite")) as saver:
                await saver.setup()
                raw_cpu = await _abatch_cpu(overhead.raw_graph(saver), m, text, conc, True)
            slm = await _batch_cpu(overhead.slm_graph(checkpoint=str(work / "slm.sqlite")), rows, work / "out.jsonl", conc)
            return slm, raw_cpu

        (s_cpu, s_wall), (r_cpu, r_wall) = asyncio.run(both())
        print(f"{store:>14} {s_cpu / m * 1e6:>17.0f} {r_cpu / m * 1e6:>13.0f} {s_cpu / r_cpu:>6.3f} "
              f"{m / s_wall:>12.0f} {m / r_wall:>13.0f}")  # fmt: skip
    # Against the fault server: does a batch keep the model host's slots full?
    p, lat = args.parallel, args.latency
    with FaultServer.start(latency=lat, parallel=p, max_queue=4096, reply='{"text": "$USER"}') as fault:
        from slmgraph.batch import GraphSource, run_batch
        from slmgraph.graphs import register_graph

        register_graph("echo", echo_graph)
        work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
        m = int(args.fault_seconds * p / lat)
        cfg = load_config(write_config(work / "slm.toml", fault.url, 2 * p, str(work / "c.sqlite")))
        rows = _rows(work / "in.jsonl", m, "echo")
        started = time.perf_counter()
        summary = asyncio.run(run_batch(GraphSource("echo", cfg), rows, work / "out.jsonl", progress=False))
        wall = time.perf_counter() - started
        print(f"   against the fault server (P={p}, L={lat:g} s, P/L = {p / lat:g}/s, SQLite store): {m} rows, "
              f"{m / wall:.2f} rows/s = {m / wall / (p / lat):.3f} of P/L; statuses {summary.statuses}")  # fmt: skip
    print(f"   peak RSS of this process: {peak_mb():.0f} MiB")


# --------------------------------------------------------------------------- 3. Ray vs local


def part_ray(args, pg=None) -> None:
    import ray

    from slmgraph.batch import GraphSource, LocalExecutor, RayExecutor, run_batch

    p, lat, m = 256, 0.02, args.ray_rows
    print(f"\n3. Ray (2 workers) against local: {m} rows, fault server P={p}, L={lat:g} s "
          f"(P/L = {p / lat:g}/s, not the limit)")  # fmt: skip
    print(f"   load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with FaultServer.start(latency=lat, parallel=p, max_queue=4096, reply='{"text": "$USER"}') as fault:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for store in args.ray_stores:
                for name, executor in (("local", LocalExecutor()), ("ray, 2 workers", RayExecutor("auto", workers=2))):
                    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
                    where = pg.createdb(f"ray_{len(name)}_{int(time.time())}") if store == "postgresql" else str(work / "c.sqlite")
                    cfg = load_config(write_config(work / "slm.toml", fault.url, 32, where))
                    rows = _rows(work / "in.jsonl", m, "echo")
                    started = time.perf_counter()
                    summary = asyncio.run(run_batch(GraphSource("scale_out:echo_graph", cfg), rows, work / "out.jsonl",
                                                    concurrency=64, executor=executor, progress=False))  # fmt: skip
                    wall = time.perf_counter() - started
                    print(f"   {store:<10} {name:<15} {m / wall:8.1f} rows/s  ({wall:.1f} s; statuses {summary.statuses})")
        finally:
            ray.shutdown()
    print(f"   peak RSS: this process {peak_mb():.0f} MiB, largest child {peak_mb(resource.RUSAGE_CHILDREN):.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--parallel", type=int, default=4, help="P: fault server slots")
    ap.add_argument("--latency", type=float, default=0.2, help="L: seconds per model call")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--requests", type=int, default=160, help="concurrent requests per serve run")
    ap.add_argument("--max-starting", type=int, default=None,
                    help="serve's max_starting (runs in set-up at once); default: serve's own")
    ap.add_argument("--rows", type=int, default=10000, help="rows of the overhead run without a store")
    ap.add_argument("--sqlite-rows", type=int, default=2000, help="rows of the overhead run with SQLite")
    ap.add_argument("--stores", nargs="+", default=["none", "sqlite"])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fault-seconds", type=float, default=10.0, help="length of the batch run against the fault server")
    ap.add_argument("--ray-rows", type=int, default=2000)
    ap.add_argument("--ray-stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    from pg_server import pg_server

    with pg_server() if 1 in args.part or (3 in args.part and "postgresql" in args.ray_stores) else contextlib.nullcontext() as pg:
        if 1 in args.part:
            part_serve(args, pg)
        if 2 in args.part:
            part_overhead(args)
        if 3 in args.part:
            part_ray(args, pg)


if __name__ == "__main__":
    main()
