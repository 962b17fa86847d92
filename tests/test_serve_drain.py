"""SIGTERM under load (RELIABILITY.md row 26): a real `serve` subprocess drains the
requests in progress within ``drain_seconds`` and exits; runs it could not finish
stay recorded and are finished by recovery. Run with ``-s`` for the drain times."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("serve_drain_app", HERE / "serve_drain_app.py")
app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(app)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(checkpoint: Path, delay: str, drain: float) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMGRAPH_")}
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_drain_app.py"), str(checkpoint), str(port), delay, str(drain)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)


def _in_progress(base: str) -> int:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("slmgraph_runs_in_progress "):
            return int(float(line.split()[1]))
    return 0


def _load(base: str, n: int) -> tuple[list[threading.Thread], list]:
    results: list = []

    def one(i: int) -> None:
        body = {"model": "echo", "messages": [{"role": "user", "content": f"request {i}"}], "stream": False,
                "conversation_id": f"drain-{i}"}
        try:
            results.append(httpx.post(f"{base}/api/chat", json=body, timeout=120).status_code)
        except httpx.HTTPError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while _in_progress(base) < n:
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.05)
    return threads, results


def test_sigterm_lets_running_requests_finish_and_exits(tmp_path):
    proc, base = _start(tmp_path / "c.sqlite", "1.5", 10.0)
    threads, results = _load(base, 4)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    proc.wait(timeout=60)
    print(f"\ndrain with 4 runs of 1.5 s in progress: exited {time.monotonic() - sent:.2f} s after SIGTERM")
    assert results == [200, 200, 200, 200]
    assert app.graph(str(tmp_path / "c.sqlite"), 0).pending_runs() == []
    try:
        httpx.get(f"{base}/healthz", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except httpx.ConnectError:
        pass


def test_sigterm_with_stuck_runs_exits_at_the_drain_bound_and_recovery_finishes_them(tmp_path):
    checkpoint = tmp_path / "c.sqlite"
    proc, base = _start(checkpoint, "inf", 1.0)
    threads, results = _load(base, 3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)  # a run that never ends does not hold the process
    print(f"\ndrain bound 1 s with 3 stuck runs: exited {time.monotonic() - sent:.2f} s after SIGTERM")
    for t in threads:
        t.join(timeout=60)
    assert all(r != 200 for r in results)
    assert "drain bound of 1s reached" in proc.stderr.read()
    graph = app.graph(str(checkpoint), 0)
    pending = graph.pending_runs()
    assert sorted(r.thread_id for r in pending) == [f"echo/drain-{i}" for i in range(3)]
    finished = graph.recover()
    assert sorted(r.thread_id for r in finished) == [f"echo/drain-{i}" for i in range(3)]
    assert all(r.status == "answered" for r in finished) and graph.pending_runs() == []
