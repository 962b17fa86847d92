"""Reliability matrix rows 1-7: transport faults injected by the fault server (another
process), through the real Ollama and OpenAI clients. Retry sleeps are recorded, not
slept, except where a test measures real waiting."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from slmgraph import (
    CircuitBreaker,
    CircuitOpenError,
    FallbackModel,
    GuardedModel,
    IncompleteStreamError,
    MalformedResponseError,
    Message,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelTimeoutError,
    ModelUnavailableError,
    OllamaModel,
    OpenAIModel,
    RetryingModel,
    RetryPolicy,
    SlmGraphError,
)

HI = [Message("user", "hi")]
BACKENDS = ["ollama", "openai"]
CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


class Sleeps:
    """A stand-in for ``asyncio.sleep`` that records what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make(server, backend: str, **kw):
    if backend == "ollama":
        return OllamaModel("fault-model", host=server.url, **kw)
    return OpenAIModel("fault-model", base_url=server.openai_url, **kw)


def retrying(model, attempts: int = 3, sleeps: Sleeps | None = None, **policy) -> RetryingModel:
    return RetryingModel(model, RetryPolicy(attempts=attempts, initial_s=0.01, max_s=0.05, **policy), sleep=sleeps or Sleeps())


def chat_requests(server, backend: str) -> int:
    return len(server.log(CHAT[backend]))


async def settle(server, key: str, want: int, within_s: float = 5.0) -> int:
    """Poll a server counter until it reaches ``want`` (the server notices closes asynchronously)."""
    deadline = time.monotonic() + within_s
    while True:
        value = server.stats()[key]
        if value == want or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


# -- row 1: server down (connection refused) ------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refused_connection_is_typed_and_retried_a_bounded_number_of_times(fault_server, backend):
    fault_server.down()
    sleeps = Sleeps()
    model = retrying(make(fault_server, backend), attempts=3, sleeps=sleeps)
    with pytest.raises(ModelUnavailableError):
        await model.complete(HI)
    assert len(sleeps.calls) == 2  # 3 attempts: 1 + max_retries
    assert make(fault_server, backend).connect_timeout <= 2.0  # the default fails fast


async def test_breaker_opens_after_k_failures_and_a_probe_closes_it(fault_server):
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=30.0, clock=lambda: now[0])
    model = GuardedModel(make(fault_server, "ollama"), breaker=breaker)
    fault_server.down()
    for _ in range(3):
        with pytest.raises(ModelUnavailableError) as info:
            await model.complete(HI)
        assert not isinstance(info.value, CircuitOpenError)
    assert breaker.state == "open" and breaker.opened == 1
    fault_server.up()
    with pytest.raises(CircuitOpenError) as info:  # fails at once, the server sees nothing
        await model.complete(HI)
    assert info.value.retry_in == pytest.approx(30.0) and chat_requests(fault_server, "ollama") == 0
    now[0] += 30.0  # cooldown over: one probe goes through and closes the breaker
    assert (await model.complete(HI)).text == "ok"
    assert breaker.state == "closed" and chat_requests(fault_server, "ollama") == 1
    await model.aclose()


async def test_connect_timeout_fires_when_the_handshake_never_completes():
    # A listener whose accept queue is full drops new SYNs: the connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        model = OllamaModel("m", host=f"http://127.0.0.1:{port}", connect_timeout=0.3, timeout=30.0)
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="connect_timeout=0.3"):
            await asyncio.wait_for(model.complete(HI), 20)
        assert time.monotonic() - started >= 0.3
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_a_down_primary_falls_back_to_a_local_backup(fault_server, fault_server_b):
    fault_server.down()
    primary = retrying(make(fault_server, "ollama"), attempts=2)
    backup = retrying(make(fault_server_b, "ollama"), attempts=2)
    chain = FallbackModel([primary, backup])
    assert chain.local and (await chain.complete(HI)).text == "ok"
    assert chain.served_by == [1] and chat_requests(fault_server_b, "ollama") == 1
    await chain.aclose()


# -- row 2: black hole (accepts, never answers) -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_black_hole_times_out_and_leaves_no_open_connection(fault_server, backend, stream):
    fault_server.faults([{"kind": "hang"}])
    model = make(fault_server, backend, timeout=0.4)
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        if stream:
            async for _ in model.stream(HI):
                pass
        else:
            await model.complete(HI)
    assert time.monotonic() - started >= 0.4
    # The timed-out connection was closed by us, not parked in the pool.
    assert await settle(fault_server, "open_connections", 0) == 0
    assert await settle(fault_server, "active", 0) == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    await model.aclose()


# -- row 3: stall mid-stream ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_that_stalls_is_cancelled_by_the_idle_timeout(fault_server, backend):
    fault_server.configure(reply="one two three four", chunks=4)
    fault_server.faults([{"kind": "stall", "after": 2}])
    model = make(fault_server, backend, timeout=5.0, idle_timeout=0.3)
    seen = []
    with pytest.raises(ModelTimeoutError, match="stalled mid-stream"):
        async for chunk in model.stream(HI):
            seen.append(chunk)
    partial = "".join(c.delta for c in seen)
    assert len(seen) == 2 and "one two three four".startswith(partial) and partial != "one two three four"
    assert all(c.reply is None for c in seen)  # no final reply: partial output is not a result
    assert await settle(fault_server, "open_connections", 0) == 0
    await model.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_body_that_stalls_half_way_times_out_and_is_retried(fault_server, backend):
    fault_server.faults([{"kind": "stall"}])
    model = retrying(make(fault_server, backend, timeout=1.0), attempts=2)
    assert (await model.complete(HI)).text == "ok"
    assert chat_requests(fault_server, backend) == 2
    await model.aclose()


# -- row 4: HTTP 500 / 503 -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_get_exactly_one_plus_max_retries_requests(fault_server, backend, status):
    fault_server.faults([{"kind": "status", "status": status, "times": 10}])
    sleeps = Sleeps()
    model = retrying(make(fault_server, backend), attempts=4, sleeps=sleeps)
    with pytest.raises(ModelHTTPError) as info:
        await model.complete(HI)
    assert info.value.status_code == status and info.value.transient
    assert chat_requests(fault_server, backend) == 4  # 1 + max_retries, exactly
    assert len(sleeps.calls) == 3 and all(0 <= s <= 0.05 for s in sleeps.calls)  # jittered, capped
    await model.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fewer_faults_than_retries_succeed(fault_server, backend):
    fault_server.faults([{"kind": "status", "status": 503}, {"kind": "status", "status": 500}])
    model = retrying(make(fault_server, backend), attempts=3)
    assert (await model.complete(HI)).text == "ok"
    assert chat_requests(fault_server, backend) == 3
    await model.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("status", [400, 404])
async def test_bad_request_and_missing_model_are_never_retried(fault_server, backend, status):
    if status == 404:
        model = retrying(OllamaModel("absent", host=fault_server.url) if backend == "ollama"
                         else OpenAIModel("absent", base_url=fault_server.openai_url))  # fmt: skip
        expected = ModelNotFoundError
    else:
        fault_server.faults([{"kind": "status", "status": 400}])
        model, expected = retrying(make(fault_server, backend)), ModelHTTPError
    with pytest.raises(expected) as info:
        await model.complete(HI)
    assert not info.value.transient and chat_requests(fault_server, backend) == 1
    await model.aclose()


async def test_after_its_retries_a_busy_primary_falls_back(fault_server, fault_server_b):
    fault_server.faults([{"kind": "status", "status": 503, "times": 10}])
    chain = FallbackModel([retrying(make(fault_server, "ollama"), attempts=3), retrying(make(fault_server_b, "openai"))])
    assert (await chain.complete(HI)).text == "ok"
    assert chat_requests(fault_server, "ollama") == 3 and chat_requests(fault_server_b, "openai") == 1
    await chain.aclose()


# -- row 5: 429 with Retry-After ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retry_after_is_honoured_exactly(fault_server, backend):
    fault_server.faults([{"kind": "status", "status": 429, "retry_after": 7}])
    sleeps = Sleeps()
    model = retrying(make(fault_server, backend), sleeps=sleeps)
    assert (await model.complete(HI)).text == "ok"
    assert sleeps.calls == [7.0]  # the server's wait, not backoff on top of it
    assert chat_requests(fault_server, backend) == 2
    await model.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retry_after_beyond_the_cap_is_not_retried(fault_server, backend):
    fault_server.faults([{"kind": "status", "status": 429, "retry_after": 120}])
    sleeps = Sleeps()
    model = retrying(make(fault_server, backend), sleeps=sleeps, retry_after_cap_s=30.0)
    with pytest.raises(ModelOverloadedError) as info:
        await model.complete(HI)
    assert info.value.retry_after == 120 and sleeps.calls == []
    assert chat_requests(fault_server, backend) == 1
    await model.aclose()


async def test_no_request_is_sent_during_a_real_retry_after(fault_server):
    fault_server.faults([{"kind": "status", "status": 429, "retry_after": 1} for _ in range(3)])
    model = RetryingModel(make(fault_server, "ollama"), RetryPolicy(attempts=3, initial_s=0.0, max_s=0.0))
    replies = await asyncio.gather(*(model.complete([Message("user", f"call {i}")]) for i in range(3)))
    assert [r.text for r in replies] == ["ok"] * 3
    log = fault_server.log("/api/chat")
    assert len(log) == 6  # each call: one 429, one retry; no storm
    for i in range(3):
        times = sorted(e["t"] for e in log if e["body"]["messages"][0]["content"] == f"call {i}")
        assert len(times) == 2  # nothing from this call during its cooldown
        assert times[1] - times[0] >= 1.0  # the retry came after Retry-After
    await model.aclose()


# -- row 6: 200 with a malformed body ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("body", ["html", "json"])
async def test_malformed_200_is_a_transport_fault_retried_at_most_once(fault_server, backend, body):
    fault_server.faults([{"kind": "malformed", "body": body, "times": 3}])
    model = retrying(make(fault_server, backend), attempts=4)
    with pytest.raises(MalformedResponseError):
        await model.complete(HI)
    assert chat_requests(fault_server, backend) == 2  # the first try and one retry
    fault_server.reset()
    fault_server.faults([{"kind": "malformed", "body": body}])
    assert (await model.complete(HI)).text == "ok"
    await model.aclose()


# -- row 7: truncated stream -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clean", [False, True])
@pytest.mark.parametrize("after", [0, 1, 3])
async def test_a_truncated_stream_is_never_accepted_as_final(fault_server, backend, clean, after):
    fault_server.configure(reply="alpha beta gamma delta", chunks=4)
    fault_server.faults([{"kind": "cut", "after": after, "clean": clean}])
    finals = []
    with pytest.raises((IncompleteStreamError, ModelUnavailableError)):
        async for chunk in make(fault_server, backend).stream(HI):
            if chunk.reply is not None:
                finals.append(chunk.reply)
    assert finals == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_cut_reply_is_retried_and_the_retry_is_whole(fault_server, backend):
    fault_server.configure(reply="alpha beta gamma delta")
    fault_server.faults([{"kind": "cut"}])
    model = retrying(make(fault_server, backend))
    assert (await model.complete(HI)).text == "alpha beta gamma delta"
    fault_server.faults([{"kind": "cut", "after": 0, "clean": True}])
    chunks = [c async for c in model.stream(HI)]  # cut before the first chunk: retried
    assert chunks[-1].reply.text == "alpha beta gamma delta"
    assert chat_requests(fault_server, backend) == 4
    await model.aclose()


# -- every fault, both backends: typed errors only --------------------------------------------

FAULTS = [
    {"kind": "reset"}, {"kind": "hang"}, {"kind": "stall"}, {"kind": "cut"}, {"kind": "cut", "clean": True},
    {"kind": "status", "status": 500}, {"kind": "status", "status": 503}, {"kind": "status", "status": 429},
    {"kind": "status", "status": 400}, {"kind": "malformed"}, {"kind": "malformed", "body": "json"},
    {"kind": "error_record"},
]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_fault_ends_in_a_typed_error_never_a_raw_one(fault_server, backend):
    model = make(fault_server, backend, timeout=0.3)
    untyped = []
    for stream in (False, True):
        for fault in FAULTS:
            fault_server.faults([fault])
            try:
                if stream:
                    finals = [c.reply async for c in model.stream(HI) if c.reply is not None]
                    untyped += [("accepted", fault)] if fault["kind"] not in ("ok",) and finals else []
                else:
                    await model.complete(HI)
                    untyped.append(("no error", fault))
            except SlmGraphError:
                pass
            except Exception as exc:  # noqa: BLE001 - what this test hunts for
                untyped.append((type(exc).__name__, fault, stream))
    assert untyped == []
    await model.aclose()


async def test_a_stalled_reply_leaves_nothing_in_the_checkpoint(fault_server, tmp_path):
    from pydantic import BaseModel

    from slmgraph import Skill, build_graph

    class Echo(BaseModel):
        text: str

    skill = Skill(name="echo", description="repeat", instructions="Repeat.", output_type=Echo)
    fault_server.configure(reply='{"text": "PARTIAL-MARKER ' + "x" * 400 + '"}')
    fault_server.faults([{"kind": "stall", "times": 2}])
    db = tmp_path / "runs.sqlite"
    model = retrying(make(fault_server, "ollama", timeout=1.0), attempts=2)
    graph = build_graph([skill], models={"small": model}, checkpoint=str(db))
    with pytest.raises(ModelTimeoutError):
        await graph.ainvoke("repeat me", thread_id="stalled")
    assert chat_requests(fault_server, "ollama") == 2
    result = await graph.aget_result("stalled")
    assert result is None or (result.output_json is None and result.answer is None)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"PARTIAL-MARKER" not in stored  # partial output committed: 0
    # The control: the same reply, whole, does reach the checkpoint.
    assert (await graph.ainvoke("repeat me", thread_id="whole")).output_json["text"].startswith("PARTIAL-MARKER")
    assert b"PARTIAL-MARKER" in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    await model.aclose()
