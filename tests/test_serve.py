"""`slmgraph serve`: real OpenAI and Ollama clients against a real uvicorn server on
a loopback port, graphs backed by test doubles."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import uvicorn
from pydantic import BaseModel

from slmgraph import (
    ConfigError,
    ModelUnavailableError,
    Rule,
    RulesRouter,
    SLMGraph,
    Skill,
    build_graph,
)
from slmgraph.serve import ServeConfig, check_bind, create_app, is_loopback, load_serve_config, serve
from slmgraph.testing import FunctionModel

KEY = "test-key-0123456789"


class Reply(BaseModel):
    text: str


def echo(msgs, schema):
    """Echo the request, and how many earlier turns the skill was shown."""
    request = msgs[-1].content.rsplit("\n", 1)[-1]
    earlier = [m.content for m in msgs[1:-1]]
    return {"text": f"you said: {request} | earlier: {earlier}"}


def chat_graph(model=None, *, checkpoint=None, name="echo", context_window=8192) -> SLMGraph:
    """Requests mentioning "weather" fit no skill (so they escalate); the rest are echoed."""
    skill = Skill(name="echo", description="echo", instructions="Echo the user.", output_type=Reply, memory=True)
    model = model or FunctionModel(echo, name="tiny-echo", context_window=context_window)
    router = RulesRouter([Rule("echo", (r"^(?!.*weather)",))])
    return build_graph([skill], models={"small": model}, router=router, checkpoint=checkpoint, name=name)


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a background thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the test server did not stop"


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def url() -> Iterator[str]:
    with running(create_app(chat_graph())) as base:
        yield base


def oai(base: str, **kw) -> openai.OpenAI:
    kw.setdefault("api_key", "unused")
    return openai.OpenAI(base_url=f"{base}/v1", max_retries=0, **kw)


# -- OpenAI protocol ------------------------------------------------------------


def test_openai_client_lists_the_graph_and_chats_with_usage_and_extension(url):
    client = oai(url)
    assert [m.id for m in client.models.list().data] == ["echo"]
    assert client.models.retrieve("echo").id == "echo"
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "an older turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hello there"},
    ]
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=messages)
    done = raw.parse()
    text = done.choices[0].message.content
    assert text.startswith('{"text":"you said: hello there | earlier: []')  # the last user message only
    assert done.choices[0].finish_reason == "stop" and done.model == "echo"
    ext = done.model_extra["slmgraph"]
    assert (ext["status"], ext["route"], ext["escalation_reason"]) == ("answered", "echo", None)
    assert done.usage.prompt_tokens == ext["totals"]["prompt_tokens"] > 0
    assert done.usage.completion_tokens == ext["totals"]["completion_tokens"] > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert raw.headers["x-slmgraph-route"] == "echo" and raw.headers["x-slmgraph-status"] == "answered"
    assert raw.headers["x-slmgraph-thread-id"] == f"echo/{raw.headers['x-conversation-id']}" == ext["thread_id"]


def test_openai_streaming_yields_the_answer_usage_and_ends_with_done(url):
    client = oai(url)
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "stream me a reply please"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith('{"text":"you said: stream me a reply please')
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # sent in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0
    ext = [c.model_extra["slmgraph"] for c in chunks if "slmgraph" in (c.model_extra or {})]
    assert ext[-1]["status"] == "answered" and ext[-1]["totals"]["prompt_tokens"] == chunks[-1].usage.prompt_tokens

    # On the wire: node events are SSE comments, and the stream ends with [DONE].
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert ": slmgraph node router" in lines and ": slmgraph node specialist" in lines
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: "):])
    assert last["usage"]["total_tokens"] > 0  # without include_usage, on the closing chunk


def test_openai_errors_use_the_openai_shape(url):
    client = oai(url)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "   "}])
    assert e.value.body["code"] == "empty_request" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "system", "content": "no user turn"}])
    assert "role 'user'" in e.value.body["message"]
    for bad in (b"{not json", b"[1, 2]", json.dumps({"model": "echo", "messages": "hi"}).encode(),
                json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()):
        r = httpx.post(f"{url}/v1/chat/completions", content=bad, headers={"content-type": "application/json"})
        assert r.status_code == 400, bad
        err = r.json()["error"]
        assert set(err) == {"message", "type", "code", "param"} and err["type"] == "invalid_request_error"
    r = httpx.get(f"{url}/v1/nowhere")
    assert r.status_code == 404 and "error" in r.json() and "message" in r.json()["error"]


def test_a_model_failure_maps_to_its_status_and_a_stream_reports_it_in_band():
    def down(msgs, schema):
        raise ModelUnavailableError("no server at http://127.0.0.1:9", model="tiny", provider="ollama")

    with running(create_app(chat_graph(FunctionModel(down)))) as base:
        with pytest.raises(openai.InternalServerError) as e:
            oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503 and e.value.body["code"] == "model_unavailable"
        with pytest.raises(openai.APIError, match="no server at"):
            list(oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True))
        with pytest.raises(ollama.ResponseError) as oe:
            ollama.Client(host=base).chat(model="echo", messages=[{"role": "user", "content": "hi"}], stream=False)
        assert oe.value.status_code == 503 and "no server at" in oe.value.error
        with pytest.raises(ollama.ResponseError, match="no server at"):  # in-band, after the 200
            list(ollama.Client(host=base).chat(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True))


def test_an_escalated_run_reports_its_reason_in_the_extension_and_headers(url):
    raw = oai(url).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "what's the weather"}])
    done = raw.parse()
    ext = done.model_extra["slmgraph"]
    assert (ext["status"], ext["route"], ext["escalation_reason"]) == ("escalation_needed", None, "none_fits")
    assert raw.headers["x-slmgraph-escalation-reason"] == "none_fits" and raw.headers["x-slmgraph-route"] == "none"
    assert "no large model configured" in done.choices[0].message.content


# -- Ollama protocol ------------------------------------------------------------


def test_ollama_client_lists_and_chats_with_and_without_streaming(url):
    client = ollama.Client(host=url)
    assert [m.model for m in client.list().models] == ["echo"]
    reply = client.chat(model="echo", messages=[{"role": "user", "content": "hi ollama"}], stream=False)
    assert reply.done and reply.message.role == "assistant"
    assert reply.message.content.startswith('{"text":"you said: hi ollama')
    assert reply.prompt_eval_count > 0 and reply.eval_count > 0 and reply.done_reason == "stop"
    parts = list(client.chat(model="echo:latest", messages=[{"role": "user", "content": "hi streaming"}], stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].prompt_eval_count > 0 and parts[-1].eval_count > 0
    assert "".join(p.message.content for p in parts).startswith('{"text":"you said: hi streaming')
    # The raw NDJSON carries node events and the extension field.
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}  # streams by default
    with httpx.stream("POST", f"{url}/api/chat", json=body) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        records = [json.loads(line) for line in r.iter_lines() if line]
    assert [x["slmgraph"]["node"] for x in records if "node" in x.get("slmgraph", {})] == ["router", "specialist"]
    assert records[-1]["done"] is True and records[-1]["slmgraph"]["status"] == "answered"


def test_ollama_errors_use_the_ollama_shape(url):
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert e.value.status_code == 404 and "llama3" in e.value.error
    r = httpx.post(f"{url}/api/chat", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}


# -- conversations ------------------------------------------------------------


def test_a_conversation_keeps_its_state_across_requests_and_a_restart(tmp_path):
    db = tmp_path / "serve.sqlite"
    seen = []

    def remember(msgs, schema):
        seen.append([m.content for m in msgs])
        return echo(msgs, schema)

    def turn(base: str, text: str, **kw):
        return oai(base).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": text}], **kw)

    with running(create_app(chat_graph(FunctionModel(remember), checkpoint=db))) as base:
        first = turn(base, "my name is Ada", extra_headers={"X-Conversation-Id": "c-1"})
        second = turn(base, "what is my name", extra_body={"conversation_id": "c-1"})
        assert first.model_extra["slmgraph"]["thread_id"] == second.model_extra["slmgraph"]["thread_id"] == "echo/c-1"
        assert "my name is Ada" in seen[-1] and first.choices[0].message.content in seen[-1]
        fresh = turn(base, "who am I")  # no id: a new thread
        assert not any("Ada" in c for c in seen[-1])
        assert fresh.model_extra["slmgraph"]["thread_id"] != "echo/c-1"
    # A new server process-worth of objects on the same SQLite file.
    with running(create_app(chat_graph(FunctionModel(remember), checkpoint=db))) as base:
        client = ollama.Client(host=base, headers={"X-Conversation-Id": "c-1"})
        client.chat(model="echo", messages=[{"role": "user", "content": "and after the restart?"}], stream=False)
        assert "my name is Ada" in seen[-1] and "what is my name" in seen[-1]
    result = chat_graph(checkpoint=db).get_result("echo/c-1")
    assert result.status == "answered" and "after the restart" in result.answer


def test_a_client_that_disconnects_mid_stream_cancels_its_run_and_the_thread_stays_usable(tmp_path):
    db = tmp_path / "serve.sqlite"
    entered, cancelled, block = threading.Event(), threading.Event(), threading.Event()
    block.set()

    async def slow(msgs, schema):
        if block.is_set():
            entered.set()
            try:
                await asyncio.sleep(120)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return echo(msgs, schema)

    app = create_app(chat_graph(FunctionModel(slow), checkpoint=db))
    with running(app) as base:
        body = {"model": "echo", "messages": [{"role": "user", "content": "first, abandoned"}], "stream": True}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body,
                          headers={"X-Conversation-Id": "gone"}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk
            wait_for(entered.is_set, "the specialist's model call")
        # Leaving the block closed the connection mid-run.
        wait_for(cancelled.is_set, "the run to be cancelled")
        snapshot = chat_graph(checkpoint=db).get_result("echo/gone")
        assert snapshot.status == "running"  # stopped at the router's checkpoint, whole
        metrics = httpx.get(f"{base}/metrics").text
        assert 'slmgraph_client_disconnects_total{protocol="openai",model="echo"} 1' in metrics
        assert 'slmgraph_requests_total{protocol="openai",model="echo",code="499"} 1' in metrics

        block.clear()
        again = oai(base).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "second try"}], extra_headers={"X-Conversation-Id": "gone"})
        assert again.model_extra["slmgraph"]["status"] == "answered"
        assert "first, abandoned" in again.choices[0].message.content  # the history kept the abandoned turn
    final = chat_graph(checkpoint=db).get_result("echo/gone")
    assert final.status == "answered" and "second try" in final.answer


def test_a_non_streaming_client_that_disconnects_cancels_its_run():
    entered, cancelled = threading.Event(), threading.Event()

    async def slow(msgs, schema):
        entered.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with running(create_app(chat_graph(FunctionModel(slow)))) as base:
        def call():
            body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": False}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/api/chat", json=body, timeout=httpx.Timeout(5, read=0.5))

        call()  # the client gives up (and closes its connection) while the run is waiting
        wait_for(cancelled.is_set, "the run to be cancelled")
        assert entered.is_set()
        metrics = httpx.get(f"{base}/metrics").text
        assert 'slmgraph_client_disconnects_total{protocol="ollama",model="echo"} 1' in metrics


def test_requests_on_one_conversation_run_one_after_the_other(tmp_path):
    calls, release = [], threading.Event()

    async def held(msgs, schema):
        which = "first" if "the first" in msgs[-1].content else "second"
        calls.append(("start", which))
        while which == "first" and not release.is_set():
            await asyncio.sleep(0.01)
        calls.append(("end", which))
        return echo(msgs, schema)

    app = create_app(chat_graph(FunctionModel(held), checkpoint=tmp_path / "c.sqlite"))
    host = app.state.slmgraph.host
    with running(app) as base:
        answers: dict[str, str] = {}

        def say(text: str) -> None:
            reply = oai(base, timeout=60).chat.completions.create(
                model="echo", messages=[{"role": "user", "content": text}], extra_headers={"X-Conversation-Id": "same"})
            answers[text] = reply.choices[0].message.content

        first = threading.Thread(target=say, args=("the first",))
        first.start()
        wait_for(lambda: calls == [("start", "first")], "the first run's model call")
        second = threading.Thread(target=say, args=("the second",))
        second.start()
        wait_for(lambda: host.thread_users("echo/same") == 2, "the second request to wait for the thread")
        assert calls == [("start", "first")]  # the second run has not started
        release.set()
        first.join(timeout=60)
        second.join(timeout=60)
    assert calls == [("start", "first"), ("end", "first"), ("start", "second"), ("end", "second")]
    # The second run saw the first turn and its answer in the thread's history.
    assert "earlier: ['the first'" in answers["the second"] and "you said: the first" in answers["the second"]
    assert host.thread_users("echo/same") == 0


# -- limits and safety ----------------------------------------------------------


def test_binding_beyond_loopback_needs_api_keys():
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_bind(ServeConfig(host=host))
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigError, match="API keys") as e:
            check_bind(ServeConfig(host=host))
        assert e.value.field == "serve.api_keys"
        check_bind(ServeConfig(host=host, api_keys=[KEY]))
    with pytest.raises(ConfigError, match="API keys"):
        create_app(chat_graph(), ServeConfig(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="API keys"):  # refused before binding anything
        serve(chat_graph(), ServeConfig(host="0.0.0.0", port=1))


def test_serve_config_reads_the_serve_table_and_the_environment(tmp_path):
    toml = tmp_path / "slm.toml"
    toml.write_text('[serve]\nhost = "0.0.0.0"\nport = 9000\nmax_concurrency = 3\n')
    cfg = load_serve_config(toml, env={"SLMGRAPH_API_KEYS": "k1, k2,"})
    assert (cfg.host, cfg.port, cfg.max_concurrency, cfg.api_keys) == ("0.0.0.0", 9000, 3, ["k1", "k2"])
    check_bind(cfg)
    assert KEY not in repr(load_serve_config(env={"SLMGRAPH_API_KEYS": KEY}))
    assert load_serve_config(toml, overrides={"port": 9100, "host": None}, env={}).port == 9100
    with pytest.raises(ConfigError, match="serve.port"):
        load_serve_config(env={"SLMGRAPH_SERVE_PORT": "not-a-port"})


def test_api_keys_are_enforced_when_configured():
    with running(create_app(chat_graph(), ServeConfig(api_keys=[KEY]))) as base:
        with pytest.raises(openai.AuthenticationError) as e:
            oai(base, api_key="wrong").chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            oai(base, api_key="wrong").models.list()
        ok = oai(base, api_key=KEY).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert ok.model_extra["slmgraph"]["status"] == "answered"
        with pytest.raises(ollama.ResponseError) as oe:
            ollama.Client(host=base).list()
        assert oe.value.status_code == 401
        authed = ollama.Client(host=base, headers={"Authorization": f"Bearer {KEY}"})
        assert authed.chat(model="echo", messages=[{"role": "user", "content": "hi"}], stream=False).done
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "models": ["echo"]}


def test_an_oversized_body_is_rejected_with_413_in_each_protocol_shape():
    app = create_app(chat_graph(), ServeConfig(max_body_bytes=2000))
    big = "x" * 5000
    with running(app) as base:
        with pytest.raises(openai.APIStatusError) as e:
            oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": big}])
        assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"
        with pytest.raises(ollama.ResponseError) as oe:
            ollama.Client(host=base).chat(model="echo", messages=[{"role": "user", "content": big}], stream=False)
        assert oe.value.status_code == 413 and "larger than 2000 bytes" in oe.value.error

        def chunked():  # no Content-Length: the limit holds while reading
            yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(f"{base}/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        ok = oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "small"}])
        assert ok.choices[0].message.content


def test_a_request_larger_than_the_models_context_is_refused_before_any_call():
    model = FunctionModel(echo, context_window=64)
    with running(create_app(chat_graph(model))) as base:
        with pytest.raises(openai.APIStatusError) as e:
            oai(base).chat.completions.create(model="echo", messages=[{"role": "user", "content": "word " * 200}])
        assert e.value.status_code == 413 and e.value.body["code"] == "context_length_exceeded"
    assert model.calls == []


def test_runs_beyond_the_concurrency_limit_queue_and_beyond_the_queue_get_503():
    active, peak, release = [0], [0], threading.Event()

    async def held(msgs, schema):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        while not release.is_set():
            await asyncio.sleep(0.01)
        active[0] -= 1
        return echo(msgs, schema)

    app = create_app(chat_graph(FunctionModel(held)), ServeConfig(max_concurrency=2, max_queue=1))
    server = app.state.slmgraph
    with running(app) as base:
        results: list[int] = []

        def call() -> None:
            body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": False}
            results.append(httpx.post(f"{base}/api/chat", json=body, timeout=60).status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: server.host.limiter.active == 2 and server.host.limiter.waiting == 1, "2 running, 1 queued")
        metrics = httpx.get(f"{base}/metrics").text
        assert "slmgraph_runs_in_progress 2" in metrics and "slmgraph_runs_queued 1" in metrics
        busy = httpx.post(f"{base}/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
        release.set()
        for t in threads:
            t.join(timeout=60)
    assert results == [200, 200, 200] and peak[0] == 2


# -- metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$|^.* \+Inf$')


def test_metrics_are_prometheus_text_with_requests_latency_escalations_and_tokens(url):
    client = oai(url)
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "weather?"}])
    ollama.Client(host=url).chat(model="echo", messages=[{"role": "user", "content": "hi"}], stream=False)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(f"{url}/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _SAMPLE.match(line), line
    assert 'slmgraph_requests_total{protocol="openai",model="echo",code="200"} 2' in text
    assert 'slmgraph_requests_total{protocol="ollama",model="echo",code="200"} 1' in text
    assert 'slmgraph_requests_total{protocol="openai",model="-",code="404"} 1' in text
    assert 'slmgraph_request_duration_seconds_bucket{protocol="openai",model="echo",le="+Inf"} 2' in text
    assert 'slmgraph_request_duration_seconds_count{protocol="openai",model="echo"} 2' in text
    assert 'slmgraph_runs_total{model="echo",status="escalation_needed"} 1' in text
    assert 'slmgraph_escalations_total{model="echo",reason="none_fits"} 1' in text
    rate = re.search(r'^slmgraph_escalation_rate\{model="echo"\} (\S+)$', text, re.M)
    assert rate and float(rate.group(1)) == pytest.approx(1 / 3)
    tokens = re.findall(r'^slmgraph_model_tokens_total\{model="echo",backend_model="tiny-echo",tier="small",kind="(\w+)"\} (\d+)$', text, re.M)
    assert {k for k, _ in tokens} == {"prompt", "completion"} and all(int(v) > 0 for _, v in tokens)
    assert "# TYPE slmgraph_request_duration_seconds histogram" in text


def test_several_graphs_are_served_as_several_models(tmp_path):
    graphs = {"alpha": chat_graph(name="a"), "beta": chat_graph(name="b", checkpoint=tmp_path / "b.sqlite")}
    with running(create_app(graphs)) as base:
        assert sorted(m.id for m in oai(base).models.list().data) == ["alpha", "beta"]
        assert sorted(m.model for m in ollama.Client(host=base).list().models) == ["alpha", "beta"]
        done = oai(base).chat.completions.create(model="beta", messages=[{"role": "user", "content": "hi"}])
        assert done.model == "beta" and done.model_extra["slmgraph"]["thread_id"].startswith("beta/")
    assert Path(tmp_path / "b.sqlite").exists()


# -- the command line ---------------------------------------------------------------


def test_the_serve_command_refuses_a_public_bind_without_keys_and_serves_on_loopback(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SLMGRAPH_")}
    cmd = [sys.executable, "-m", "slmgraph.cli", "serve", "quickstart", "--checkpoint", str(tmp_path / "c.sqlite")]
    refused = subprocess.run([*cmd, "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "serve.api_keys" in refused.stderr
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*cmd, "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return httpx.get(f"{base}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, "the served quickstart graph", timeout=120)
        assert [m.id for m in oai(base).models.list().data] == ["quickstart"]
        assert [m.model for m in ollama.Client(host=base).list().models] == ["quickstart"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
