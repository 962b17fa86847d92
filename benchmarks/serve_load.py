"""Load on `slmgraph serve`: C concurrent streaming clients against the served graph,
compared with the same graph run in-process at the same concurrency.

The graph is the quickstart graph (rules, then a model router, then the triage
skill) on a FunctionModel with a fixed latency per call, checkpointed to SQLite,
so a request costs two model calls. Each side runs in a fresh process: the server
(uvicorn, one worker) in one, the in-process baseline in another, the HTTP
clients in this one.

    .venv/bin/python benchmarks/serve_load.py                 # C = 1, 16, 64
    .venv/bin/python benchmarks/serve_load.py --latency 0.05 --concurrency 16

The clients speak HTTP/1.1 over asyncio streams directly (one keep-alive
connection each): httpx cost 7-17 ms of CPU per request on this machine, which
starved the server being measured.

Prints, per C: requests/s served and in-process and their ratio; CPU time per
request of the in-process run, of the server process and of the clients; time to
first byte and to first answer token (p50/p95) over HTTP; errors; and the peak RSS
of the server and of the in-process run. Target: ratio >= 0.9 at C = 16.

The graph's answer comes from a node as a whole, so the first answer token
arrives when the run ends; the first byte (the role chunk) comes at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve()


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(latency: float, checkpoint):
    """The quickstart graph on a fixed-latency model, checkpointed to ``checkpoint``."""
    from slmgraph.config import Config
    from slmgraph.graphs import quickstart_graph
    from slmgraph.testing import FunctionModel

    def reply(messages, schema):
        if "skill" in (schema or {}).get("properties", {}):
            return {"skill": "triage"}
        return {"category": "card_arrival", "urgency": "normal"}

    model = FunctionModel(reply, name="fixed-latency", latency_s=latency, logprob=-0.01)
    if isinstance(checkpoint, str):
        return quickstart_graph({"small": model}, config=Config(checkpoint=checkpoint))
    from slmgraph.graphs import SLMGraph

    graph = quickstart_graph({"small": model}, config=Config(checkpoint=":unused:"))
    return SLMGraph(graph.spec, checkpoint=checkpoint, name=graph.name)


REQUEST = "My new card still has not arrived after two weeks"


# -- child processes -------------------------------------------------------------


def server_child(port: int, db: str, latency: float, max_concurrency: int) -> None:
    from slmgraph.serve import ServeConfig, serve

    cfg = ServeConfig(port=port, max_concurrency=max_concurrency, max_queue=10_000)
    serve({"quickstart": build(latency, db)}, cfg, log_level="warning")


async def _inprocess(db: str, latency: float, concurrency: int, per_client: int) -> dict:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        await saver.setup()
        graph = build(latency, saver)  # one shared connection, as the server has
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                async for event in graph.astream(REQUEST):
                    if event.result is not None:
                        assert event.result.status == "answered", event.result.status

        await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up
        started, cpu = time.perf_counter(), time.process_time()

        async def client() -> None:
            for _ in range(per_client):
                await one()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = concurrency * per_client
    return {"rps": n / elapsed, "cpu_ms": cpu / n * 1000, "peak_rss_mib": _peak_rss_mib()}


def _event_loop_runner():
    """The loop uvicorn would pick in this interpreter: uvloop when installed."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def inprocess_child(db: str, latency: float, concurrency: int, per_client: int) -> None:
    print(json.dumps(_event_loop_runner()(_inprocess(db, latency, concurrency, per_client))))


# -- the driver ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Conn:
    """A minimal keep-alive HTTP/1.1 client for one streaming POST at a time.

    The driver shares the 2-core machine with the server; httpx cost 7-17 ms of CPU
    per request here, which starved the server it was measuring. This costs ~1 ms.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_stream(self, path: str, payload: bytes):
        """Yield the response body's lines as they arrive; raise on a non-200."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
        self.writer.write(head + payload)
        reader = self.reader
        status = (await reader.readline()).split(b" ", 2)
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if status[1:2] != [b"200"] or headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"HTTP {status[1:2]}")
        pending = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            pending += data[:-2]
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _drive(base: str, concurrency: int, per_client: int, server_pid: int) -> dict:
    host, port = base.rsplit("//", 1)[1].split(":")
    payload = json.dumps({"model": "quickstart", "messages": [{"role": "user", "content": REQUEST}], "stream": True}).encode()
    first_byte: list[float] = []
    first_token: list[float] = []
    errors = 0

    async def one(conn: _Conn, record: bool) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        got_byte = got_token = done = False
        try:
            async for line in conn.post_stream("/v1/chat/completions", payload):
                if not line:
                    continue
                now = time.perf_counter() - t0
                if not got_byte:
                    got_byte = True
                    if record:
                        first_byte.append(now)
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and not got_token:
                    data = json.loads(line[6:])
                    if "error" in data:
                        errors += 1
                    elif data["choices"] and data["choices"][0]["delta"].get("content"):
                        got_token = True
                        if record:
                            first_token.append(now)
            if not (done and got_token):
                errors += 1
        except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            await conn.close()
            conn.writer = None

    conns = [_Conn(host, int(port)) for _ in range(concurrency)]
    await asyncio.gather(*(one(c, False) for c in conns))  # warm-up, connections opened
    started, cpu, own = time.perf_counter(), _cpu_s(server_pid), time.process_time()

    async def client(conn: _Conn) -> None:
        for _ in range(per_client):
            await one(conn, True)

    await asyncio.gather(*(client(c) for c in conns))
    elapsed, cpu, own = time.perf_counter() - started, _cpu_s(server_pid) - cpu, time.process_time() - own
    for c in conns:
        await c.close()
    n = concurrency * per_client
    return {"rps": n / elapsed, "cpu_ms": cpu / n * 1000, "client_cpu_ms": own / n * 1000,
            "first_byte": first_byte, "first_token": first_token, "errors": errors}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


PYTHON = sys.executable


def run_inprocess(concurrency: int, per_client: int, latency: float, db: Path) -> dict:
    """The baseline, in a fresh process."""
    out = subprocess.run(
        [PYTHON, str(HERE), "--inprocess-child", str(db), str(concurrency), str(per_client), "--latency", str(latency)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_served(concurrency: int, per_client: int, latency: float, db: Path) -> dict:
    """A server in a fresh process, driven from this one."""
    port = _free_port()
    server = subprocess.Popen(
        [PYTHON, str(HERE), "--server-child", str(port), str(db), str(max(concurrency, 1)), "--latency", str(latency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not come up")
            time.sleep(0.1)
        served = asyncio.run(_drive(base, concurrency, per_client, server.pid))
        served["server_peak_rss_mib"] = _vm_hwm(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return served


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=float, default=0.2, help="seconds per model call (two calls per request)")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=0, help="requests per client (default: 20 at C=1, 10 at C=16, 5 at C=64)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the server and the in-process run (e.g. one with uvloop and httptools)")
    p.add_argument("--repeat", type=int, default=1, help="runs per C, alternating which side goes first")
    p.add_argument("--server-child", nargs=3, metavar=("PORT", "DB", "MAX_CONCURRENCY"), help=argparse.SUPPRESS)
    p.add_argument("--inprocess-child", nargs=3, metavar=("DB", "C", "PER_CLIENT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.server_child:
        port, db, limit = args.server_child
        server_child(int(port), db, args.latency, int(limit))
        return 0
    if args.inprocess_child:
        db, c, n = args.inprocess_child
        inprocess_child(db, args.latency, int(c), int(n))
        return 0

    global PYTHON
    PYTHON = args.python
    probe = "import importlib.util as u; print(*[m for m in ('uvloop', 'httptools') if u.find_spec(m)])"
    extras = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    impl = f"loop {'uvloop' if 'uvloop' in extras else 'asyncio'} (both sides), http {'httptools' if 'httptools' in extras else 'h11'}"
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"quickstart graph, FunctionModel latency {args.latency * 1000:.0f} ms/call (2 calls/request), SQLite checkpoints")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load}; server: uvicorn, 1 worker, "
          f"max_concurrency = C; {impl}")
    head = (f"{'C':>3} {'reqs':>5} {'in-proc r/s':>11} {'served r/s':>10} {'ratio':>6} {'CPU ms/req in/srv/cli':>21} "
            f"{'TTFB p50/p95 ms':>16} {'TTFT p50/p95 ms':>16} {'errors':>6} {'server RSS':>10} {'in-proc RSS':>11}")  # fmt: skip
    print(head)
    ratios: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in levels:
            per_client = args.requests or (20 if c == 1 else 10 if c <= 16 else 5)
            for rep in range(args.repeat):
                dbs = Path(tmp) / f"inproc-{c}-{rep}.sqlite", Path(tmp) / f"served-{c}-{rep}.sqlite"
                if rep % 2 == 0:  # alternate the order: the machine's load drifts
                    i = run_inprocess(c, per_client, args.latency, dbs[0])
                    s = run_served(c, per_client, args.latency, dbs[1])
                else:
                    s = run_served(c, per_client, args.latency, dbs[1])
                    i = run_inprocess(c, per_client, args.latency, dbs[0])
                ratios.setdefault(c, []).append(s["rps"] / i["rps"])
                fb = f"{_pct(s['first_byte'], 50) * 1000:.0f}/{_pct(s['first_byte'], 95) * 1000:.0f}"
                ft = f"{_pct(s['first_token'], 50) * 1000:.0f}/{_pct(s['first_token'], 95) * 1000:.0f}"
                cpu = f"{i['cpu_ms']:.1f}/{s['cpu_ms']:.1f}/{s['client_cpu_ms']:.1f}"
                print(f"{c:>3} {c * per_client:>5} {i['rps']:>11.1f} {s['rps']:>10.1f} {s['rps'] / i['rps']:>6.3f} {cpu:>21} {fb:>16} {ft:>16} "
                      f"{s['errors']:>6} {s['server_peak_rss_mib']:>7.0f} MiB {i['peak_rss_mib']:>8.0f} MiB", flush=True)  # fmt: skip
    if args.repeat > 1:
        print("median ratio: " + ", ".join(f"C={c}: {statistics.median(r):.3f}" for c, r in ratios.items()))
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
