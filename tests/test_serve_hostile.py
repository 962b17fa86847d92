"""`slmgraph serve` under hostile conditions (RELIABILITY.md rows 21, 22, 24, 25 and
the timeouts): two API keys, browser-shaped requests, more clients than the queue,
storage faults, malformed bodies and slow clients. Real uvicorn servers on loopback;
graphs backed by test doubles."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import ollama
import openai
import pytest
import uvicorn

from slmgraph.serve import ServeConfig, create_app
from slmgraph.serve._server import uvicorn_config
from slmgraph.testing import FunctionModel

from test_serve import chat_graph, echo, oai, wait_for

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-fedcba9876543210"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@contextmanager
def served(app, cfg: ServeConfig | None = None) -> Iterator[str]:
    """Serve ``app`` the way ``serve()`` does (header timeout included) on a free port."""
    cfg = (cfg or ServeConfig()).model_copy(update={"port": 0})
    server = uvicorn.Server(uvicorn_config(app, cfg, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "the test server", timeout=30)
    assert thread.is_alive(), "the test server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the test server did not stop"


def app_with(graph=None, **cfg):
    config = ServeConfig(**cfg)
    return create_app(graph or chat_graph(), config), config


# -- row 21: tenancy ------------------------------------------------------------------


def test_two_api_keys_never_share_a_conversation(tmp_path):
    app, cfg = app_with(chat_graph(checkpoint=tmp_path / "c.sqlite"), api_keys=[KEY_A, KEY_B])
    with served(app, cfg) as base:
        a, b = oai(base, api_key=KEY_A), oai(base, api_key=KEY_B)
        conv = {"X-Conversation-Id": "ticket-4711"}
        first = a.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "refund to DE89370400440532013000"}], extra_headers=conv)
        # B knows A's conversation id but reaches a thread of its own: A's turn is not there.
        stolen = b.chat.completions.create(model="echo", messages=[{"role": "user", "content": "what did I say?"}],
                                           extra_headers=conv)
        assert "earlier: []" in stolen.choices[0].message.content
        assert "DE89" not in json.dumps(stolen.model_dump())
        # A continues its own thread and sees its earlier turn.
        again = a.chat.completions.create(model="echo", messages=[{"role": "user", "content": "and now?"}],
                                          extra_headers=conv)
        assert "DE89370400440532013000" in again.choices[0].message.content
        thread_a = first.headers["x-slmgraph-thread-id"]
        thread_b = stolen.model_extra["slmgraph"]["thread_id"]
        assert thread_a != thread_b and thread_a.endswith("/ticket-4711") and thread_b.endswith("/ticket-4711")
        assert KEY_A not in thread_a and KEY_B not in thread_b  # an identity derived from the key, never the key
        # The same holds over the Ollama protocol.
        olla = ollama.Client(host=base, headers={"Authorization": f"Bearer {KEY_B}", **conv})
        reply = olla.chat(model="echo", messages=[{"role": "user", "content": "hello"}], stream=False)
        assert "DE89" not in reply.message.content
        # Without an id the server makes an unguessable one and returns it.
        fresh = a.chat.completions.with_raw_response.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        cid = fresh.headers["x-conversation-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", cid) and fresh.headers["x-slmgraph-thread-id"].endswith("/" + cid)


def test_without_keys_threads_keep_their_documented_shape(url_plain=None):
    app, cfg = app_with()
    with served(app, cfg) as base:
        raw = oai(base).chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Conversation-Id": "t-1"})
        assert raw.headers["x-slmgraph-thread-id"] == "echo/t-1"


# -- row 22: browser-shaped requests ----------------------------------------------------


def test_browser_shaped_requests_are_refused_and_never_reach_the_graph():
    model = FunctionModel(echo, name="tiny")
    app, cfg = app_with(chat_graph(model))
    body = json.dumps(CHAT)
    refused: list[int] = []

    def refuse(r: httpx.Response, *codes: int) -> None:
        assert r.status_code in codes, (r.request.url, r.request.headers, r.status_code)
        refused.append(r.status_code)

    with served(app, cfg) as base:
        port = base.rsplit(":", 1)[1]
        for path in ("/v1/chat/completions", "/api/chat"):
            url = base + path
            # CSRF: the content types a page can POST cross-site without a preflight.
            for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                          "multipart/form-data; boundary=x", None):
                headers = {"Content-Type": ctype} if ctype else {}
                refuse(httpx.post(url, content=body, headers=headers), 415)
                refuse(httpx.post(url, content=body, headers={**headers, "Origin": "http://evil.example"}), 403)
            # A foreign Origin with the right content type (a page that passed a preflight elsewhere).
            for origin in ("http://evil.example", "null", f"http://127.0.0.1.evil.example:{port}"):
                refuse(httpx.post(url, json=CHAT, headers={"Origin": origin}), 403)
            # DNS rebinding: the page's own name arrives as Host.
            for host in (f"evil.example:{port}", "attacker.test", f"127.0.0.1.nip.io:{port}"):
                refuse(httpx.post(url, json=CHAT, headers={"Host": host, "Origin": f"http://{host}"}), 421)
                refuse(httpx.get(base + "/v1/models", headers={"Host": host}), 421)
        # Shapes: each protocol's own error body.
        r = httpx.post(f"{base}/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"})
        assert r.json()["error"]["code"] == "unsupported_media_type"
        r = httpx.post(f"{base}/api/chat", content=body, headers={"Content-Type": "text/plain"})
        assert set(r.json()) == {"error"}
        # A preflight from a foreign origin gets no CORS grant.
        r = httpx.options(f"{base}/v1/chat/completions",
                          headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
        # Same-origin and non-browser requests pass.
        assert httpx.post(f"{base}/api/chat", json=CHAT, headers={"Origin": f"http://127.0.0.1:{port}"}).status_code == 200
        assert httpx.post(f"{base}/api/chat", json=CHAT, headers={"Host": f"localhost:{port}"}).status_code == 200
        assert httpx.post(f"{base}/v1/chat/completions",
                          json=CHAT, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    print(f"\nforged requests refused: {len(refused)} of {len(refused)} "
          f"(415: {refused.count(415)}, 403: {refused.count(403)}, 421: {refused.count(421)}); graph runs: {len(model.calls) - 3}")
    assert len(model.calls) == 3  # only the three allowed requests ran the graph


def test_cors_is_an_explicit_allow_list_and_allowed_hosts_extend_the_host_check():
    app, cfg = app_with(cors_origins=["https://app.example"], allowed_hosts=["chat.internal"])
    with served(app, cfg) as base:
        port = base.rsplit(":", 1)[1]
        pre = httpx.options(f"{base}/v1/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-conversation-id"})  # fmt: skip
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-conversation-id" in pre.headers["access-control-allow-headers"]
        r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers={"Origin": "https://app.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "X-Conversation-Id" in r.headers["access-control-expose-headers"]
        assert httpx.post(f"{base}/api/chat", json=CHAT, headers={"Origin": "https://other.example"}).status_code == 403
        assert httpx.post(f"{base}/api/chat", json=CHAT, headers={"Host": f"chat.internal:{port}"}).status_code == 200
        assert httpx.post(f"{base}/api/chat", json=CHAT, headers={"Host": "chat.external"}).status_code == 421
    with pytest.raises(ValueError):
        ServeConfig(cors_origins=["*"])
    with pytest.raises(ValueError):
        ServeConfig(allowed_hosts=["http://chat.internal/"])


# -- row 24: admission ---------------------------------------------------------------------


def test_max_queue_holds_for_streaming_clients_with_503_and_retry_after():
    release = threading.Event()

    async def held(msgs, schema):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return echo(msgs, schema)

    app, cfg = app_with(chat_graph(FunctionModel(held)), max_concurrency=2, max_queue=5)
    limiter = app.state.slmgraph.host.limiter
    with served(app, cfg) as base:

        async def client(i: int, http: httpx.AsyncClient, proto: str) -> tuple[int, str | None, str]:
            path = "/v1/chat/completions" if proto == "openai" else "/api/chat"
            body = {"model": "echo", "messages": [{"role": "user", "content": f"hi {i}"}], "stream": True}
            async with http.stream("POST", base + path, json=body) as r:
                text = "".join([chunk async for chunk in r.aiter_text()])
                return r.status_code, r.headers.get("retry-after"), text

        async def load() -> list[tuple[int, str | None, str]]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as http:
                tasks = [asyncio.create_task(client(i, http, "openai" if i % 2 else "ollama")) for i in range(50)]
                while not (limiter.active == 2 and limiter.waiting == 5):
                    await asyncio.sleep(0.01)
                while sum(t.done() for t in tasks) < 43:  # everyone beyond the queue is answered at once
                    await asyncio.sleep(0.01)
                metrics = (await http.get(base + "/metrics")).text
                assert "slmgraph_runs_in_progress 2" in metrics and "slmgraph_runs_queued 5" in metrics
                release.set()
                return await asyncio.gather(*tasks)

        results = asyncio.run(load())
    codes = [c for c, _, _ in results]
    assert codes.count(200) == 7 and codes.count(503) == 43
    assert all(ra == "1" for c, ra, _ in results if c == 503)
    assert all("queue is full" in t for c, _, t in results if c == 503)
    assert all("you said" in t for c, _, t in results if c == 200)
    assert (limiter.active, limiter.waiting) == (0, 0)


def test_a_streaming_client_that_leaves_while_queued_gives_its_place_back():
    release = threading.Event()

    async def held(msgs, schema):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return echo(msgs, schema)

    app, cfg = app_with(chat_graph(FunctionModel(held)), max_concurrency=1, max_queue=1)
    limiter = app.state.slmgraph.host.limiter
    with served(app, cfg) as base:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        running = threading.Thread(target=lambda: httpx.post(f"{base}/api/chat", json=body, timeout=60))
        running.start()
        wait_for(lambda: limiter.active == 1, "one run in progress")
        with httpx.stream("POST", f"{base}/api/chat", json=body, timeout=60) as queued:
            assert queued.status_code == 200
            wait_for(lambda: limiter.waiting == 1, "one request queued")
            assert httpx.post(f"{base}/api/chat", json=body).status_code == 503
        wait_for(lambda: limiter.waiting == 0, "the queued place given back")
        release.set()
        running.join(timeout=60)
        wait_for(lambda: limiter.active == 0, "the slot given back")


# -- row 25: errors ---------------------------------------------------------------------------


def _on_server_loop(app, coro_fn):
    saver = next(iter(app.state.slmgraph.host._savers.values()))
    return asyncio.run_coroutine_threadsafe(coro_fn(saver.conn), saver.loop).result(timeout=30)


def test_a_full_disk_is_a_retryable_503_without_paths_and_healthz_reports_it(tmp_path):
    path = tmp_path / "deep" / "checkpoints.sqlite"
    app, cfg = app_with(chat_graph(checkpoint=path))
    with served(app, cfg) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "warm up"}])

        async def fill(conn):  # SQLite's own "database or disk is full": no page may be added
            cur = await conn.execute("PRAGMA page_count")
            (pages,), = await cur.fetchall()
            await conn.execute(f"PRAGMA max_page_count = {pages}")

        _on_server_loop(app, fill)
        big = "x" * 20000  # a checkpoint that needs new pages
        for proto in ("openai", "ollama"):
            if proto == "openai":
                r = httpx.post(f"{base}/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": big}]})
                err = r.json()["error"]
                message = err["message"]
                assert err["code"] == "storage_unavailable" and err["type"] == "server_error"
            else:
                r = httpx.post(f"{base}/api/chat", json={**CHAT, "messages": [{"role": "user", "content": big}]})
                message = r.json()["error"]
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert str(tmp_path) not in r.text and "/deep/" not in r.text and "sqlite" not in message.lower()
        with pytest.raises(openai.InternalServerError) as e:  # what an SDK sees: a retryable 5xx
            oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": big}])
        assert e.value.status_code == 503
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert str(tmp_path) not in health.text


def test_healthz_probes_the_checkpoint_file_on_disk(tmp_path):
    path = tmp_path / "checkpoints.sqlite"
    app, cfg = app_with(chat_graph(checkpoint=path))
    with served(app, cfg) as base:
        oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"

        async def checkpoint_wal(conn):  # everything into the main file, so the damage below is what is read
            await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        _on_server_loop(app, checkpoint_wal)
        with open(path, "r+b") as f:  # a damaged header page
            f.write(b"\x00garbage" * 16)
        r = httpx.get(f"{base}/healthz")
        assert r.status_code == 503 and "DatabaseError" in r.json()["reason"] and str(tmp_path) not in r.text
        path.unlink()  # removed by a clean-up job
        gone = httpx.get(f"{base}/healthz")
        assert gone.status_code == 503 and "OperationalError" in gone.json()["reason"]


def test_malformed_bodies_and_ids_get_400_before_any_run():
    model = FunctionModel(echo, name="tiny")
    app, cfg = app_with(chat_graph(model))
    with served(app, cfg) as base:
        deep = ('{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 1000 + "]" * 1000 + "}")
        assert len(deep) < 2200
        surrogate = b'{"model": "echo", "messages": [{"role": "user", "content": "bad \\ud800 text"}]}'
        key_surrogate = b'{"model": "echo", "messages": [{"role": "user", "\\udfff": 1, "content": "x"}]}'
        not_utf8 = b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
        for path in ("/v1/chat/completions", "/api/chat"):
            for raw in (deep.encode(), surrogate, key_surrogate, not_utf8):
                r = httpx.post(base + path, content=raw, headers={"Content-Type": "application/json"})
                assert r.status_code == 400, (path, raw[:40], r.text)
                assert "error" in r.json()
            for cid in ("ключ-1", "a b", "../other", "x" * 201, "id\n", "/etc"):
                r = httpx.post(base + path, json={**CHAT, "conversation_id": cid})
                assert r.status_code == 400 and "conversation id" in r.text, cid
            r = httpx.post(base + path, json=CHAT, headers={"X-Conversation-Id": "Ünï".encode("utf-8")})
            assert r.status_code == 400
        nested = '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 65 + "]" * 65 + "}"
        r = httpx.post(f"{base}/v1/chat/completions", content=nested, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "nested deeper than 64" in r.json()["error"]["message"]
        ok = httpx.post(f"{base}/v1/chat/completions", json={**CHAT, "conversation_id": "ticket-4711:a.b@c"})
        assert ok.status_code == 200 and ok.headers["x-conversation-id"] == "ticket-4711:a.b@c"
    assert len(model.calls) == 1


# -- slow clients ------------------------------------------------------------------------------


def _closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_half_sent_request_does_not_hold_a_connection():
    app, cfg = app_with(header_timeout=0.5, body_timeout=0.5)
    with served(app, cfg) as base:
        port = int(base.rsplit(":", 1)[1])
        # Half the headers, then silence: closed without an answer.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            assert _closed(s) == b""
        # A connection that never sends a byte.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            assert _closed(s) == b""
        # Whole headers, half the body: 408 and the connection is closed.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"model\": \"echo\"")
            reply = _closed(s)
            assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
        # A keep-alive connection that starts a second request and stalls is closed too.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            time.sleep(0.1)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
            reply = _closed(s)
            assert reply.count(b"HTTP/1.1 200") == 1
        # The server still serves.
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_idempotency_keys_are_scoped_by_the_api_key(tmp_path):
    model = FunctionModel(echo, name="tiny")
    app, cfg = app_with(chat_graph(model, checkpoint=tmp_path / "c.sqlite"), api_keys=[KEY_A, KEY_B])
    with served(app, cfg) as base:
        def send(key: str) -> httpx.Response:
            return httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=60, headers={
                "Authorization": f"Bearer {key}", "Idempotency-Key": "order-17", "X-Conversation-Id": "c-1"})

        first = send(KEY_A)
        calls = len(model.calls)
        retry = send(KEY_A)
        assert len(model.calls) == calls  # the retry maps to the first run
        assert retry.headers["x-conversation-id"] == first.headers["x-conversation-id"] == "c-1"
        assert retry.json()["slmgraph"]["thread_id"] == first.json()["slmgraph"]["thread_id"]
        other = send(KEY_B)  # the same Idempotency-Key from another key is another run
        assert len(model.calls) > calls
        assert other.json()["slmgraph"]["thread_id"] != first.json()["slmgraph"]["thread_id"]
        assert other.headers["x-conversation-id"] == "c-1"


def test_an_idempotency_key_reused_with_another_request_gets_422(tmp_path):
    model = FunctionModel(echo, name="tiny")
    app, cfg = app_with(chat_graph(model, checkpoint=tmp_path / "c.sqlite"))
    with served(app, cfg) as base:
        def send(text: str) -> httpx.Response:
            body = {**CHAT, "messages": [{"role": "user", "content": text}]}
            return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60, headers={"Idempotency-Key": "order-18"})

        assert send("hi").status_code == 200
        calls = len(model.calls)
        reused = send("something else")
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        assert len(model.calls) == calls  # refused before any run
        assert send("hi").status_code == 200  # the true retry still gets its run
