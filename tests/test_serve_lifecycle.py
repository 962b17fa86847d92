"""`slmgraph serve` run lifecycle (RELIABILITY.md rows 19 and 20): the
``Idempotency-Key`` header maps a retried request to the same run on both
protocols, scoped to the caller's API key; a client that disconnects mid-run has
its run marked cancelled, and a restarted server does not run it again; the loop
stall gauge is exposed in /metrics. A real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import threading
from pathlib import Path

import httpx

from slmgraph.serve import ServeConfig, create_app
from slmgraph.testing import FunctionModel

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("serve_helpers", HERE / "test_serve.py")
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

KEYS = ["key-of-alice-0123456789", "key-of-bob-0123456789"]


def counting(calls: list[str]):
    def answer(msgs, schema):
        calls.append(msgs[-1].content)
        return ts.echo(msgs, schema)

    return FunctionModel(answer, name="counting")


def statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT status FROM slmgraph_runs ORDER BY created")]


def test_an_idempotency_key_maps_a_retry_to_the_same_run_on_both_protocols(tmp_path):
    calls: list[str] = []
    db = tmp_path / "serve.sqlite"
    app = create_app(ts.chat_graph(counting(calls), checkpoint=db), ServeConfig(api_keys=KEYS))
    alice = {"Authorization": f"Bearer {KEYS[0]}", "Idempotency-Key": "order-1"}
    bob = {"Authorization": f"Bearer {KEYS[1]}", "Idempotency-Key": "order-1"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "place my order"}]}
    with ts.running(app) as base:
        first = httpx.post(f"{base}/v1/chat/completions", json=body, headers=alice)
        retry = httpx.post(f"{base}/v1/chat/completions", json=body, headers=alice)
        assert first.status_code == retry.status_code == 200
        assert retry.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
        assert retry.headers["x-conversation-id"] == first.headers["x-conversation-id"]  # the first run's thread
        assert len(calls) == 1
        # Another caller's identical key is another request.
        other = httpx.post(f"{base}/v1/chat/completions", json=body, headers=bob)
        assert other.status_code == 200 and other.headers["x-conversation-id"] != first.headers["x-conversation-id"]
        assert len(calls) == 2
        # The Ollama route honours the header too.
        ollama_body = body | {"stream": False}
        one = httpx.post(f"{base}/api/chat", json=ollama_body, headers=alice | {"Idempotency-Key": "order-2"})
        two = httpx.post(f"{base}/api/chat", json=ollama_body, headers=alice | {"Idempotency-Key": "order-2"})
        assert one.status_code == two.status_code == 200 and one.json()["message"] == two.json()["message"]
        assert len(calls) == 3
        bad = httpx.post(f"{base}/v1/chat/completions", json=body, headers=alice | {"Idempotency-Key": "x" * 300})
        assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]["message"]
    assert statuses(db) == ["done"] * 3


def test_a_client_disconnect_mid_run_marks_it_cancelled_and_a_restart_does_not_run_it_again(tmp_path):
    db = tmp_path / "serve.sqlite"
    entered, calls = threading.Event(), []

    async def slow(msgs, schema):
        calls.append(msgs[-1].content)
        if "abandoned" in msgs[-1].content:
            entered.set()
            await asyncio.sleep(120)
        return ts.echo(msgs, schema)

    def app():
        return create_app(ts.chat_graph(FunctionModel(slow), checkpoint=db))

    body = {"model": "echo", "messages": [{"role": "user", "content": "abandoned"}], "stream": True}
    with ts.running(app()) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            assert next(lines).startswith("data: ")
            ts.wait_for(entered.is_set, "the model call")
        ts.wait_for(lambda: statuses(db) == ["cancelled"], "the run to be marked cancelled")
        metrics = httpx.get(f"{base}/metrics").text
        assert "slmgraph_event_loop_stall_max_seconds " in metrics
    with ts.running(app()) as base:  # a restart: its recovery finds nothing to run
        ok = httpx.post(f"{base}/v1/chat/completions", json=body | {"stream": False,
                        "messages": [{"role": "user", "content": "a new request"}]})
        assert ok.status_code == 200
    assert calls == ["abandoned", "a new request"]
    assert statuses(db) == ["cancelled", "done"]
