"""Wire-level tests for the Ollama backend.

A real HTTP server on loopback (pytest-httpserver) speaks Ollama's REST API as
documented: ``/api/chat`` JSON and NDJSON streams ending in a ``done`` record with
nanosecond durations and token counts, ``/api/tags``, ``/api/embed``, and
``{"error": "..."}`` bodies. Raw sockets cover the faults an HTTP framework cannot
produce (silence, a dropped connection).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug import Request, Response

from slmgraph._errors import (
    MalformedResponseError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from slmgraph.models._base import Message, ModelReply, ModelSettings, TokenLogprob, Usage
from slmgraph.models._ollama import OllamaModel

MODEL = "qwen2.5:0.5b"
HELLO = [Message("system", "Be brief."), Message("user", "Say hello.")]
WIRE_HELLO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello."},
]
DURATIONS = {
    "total_duration": 2_500_000_000,
    "load_duration": 500_000_000,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 250_000_000,
    "eval_count": 7,
    "eval_duration": 1_500_000_000,
}
TIMINGS_S = {"total": 2.5, "load": 0.5, "prompt_eval": 0.25, "eval": 1.5}


# ------------------------------------------------------------------ wire helpers


def chat_body(content: str, *, done_reason: str = "stop", **extra: Any) -> dict[str, Any]:
    """A non-streaming ``/api/chat`` response as Ollama sends it."""
    return {
        "model": MODEL,
        "created_at": "2025-06-01T12:00:00.123456789Z",
        "message": {"role": "assistant", "content": content},
        "done_reason": done_reason,
        "done": True,
        **DURATIONS,
        **extra,
    }


def stream_records(pieces: list[str], *, done: bool = True) -> list[dict[str, Any]]:
    """NDJSON records of a streamed ``/api/chat`` reply, ending in the ``done`` record."""
    records: list[dict[str, Any]] = [
        {
            "model": MODEL,
            "created_at": "2025-06-01T12:00:00.123456789Z",
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        for piece in pieces
    ]
    if done:
        records.append(
            {
                "model": MODEL,
                "created_at": "2025-06-01T12:00:01.123456789Z",
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "done": True,
                **DURATIONS,
            }
        )
    return records


def ndjson(records: list[dict[str, Any]]) -> Response:
    def body() -> Iterator[bytes]:
        for record in records:
            yield (json.dumps(record) + "\n").encode()

    return Response(body(), status=200, mimetype="application/x-ndjson")


class Recorder:
    """Answers every request with ``respond(request)`` and keeps the JSON bodies."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.bodies: list[Any] = []

    def __call__(self, request: Request) -> Response:
        self.bodies.append(json.loads(request.get_data()) if request.get_data() else None)
        return self.respond(request)


def json_response(payload: Any, status: int = 200) -> Any:
    return lambda _request: Response(
        json.dumps(payload), status=status, mimetype="application/json"
    )


def host_of(httpserver: Any) -> str:
    return f"http://{httpserver.host}:{httpserver.port}"


def serve(httpserver: Any, path: str, respond: Any, method: str = "POST") -> Recorder:
    recorder = Recorder(respond)
    httpserver.expect_request(path, method=method).respond_with_handler(recorder)
    return recorder


@pytest.fixture
def model(httpserver: Any) -> OllamaModel:
    return OllamaModel(MODEL, host=host_of(httpserver), timeout=5.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def raw_server() -> Iterator[Any]:
    """Start a loopback socket server running ``behaviour(conn)`` per connection."""
    listeners: list[socket.socket] = []

    def start(behaviour: Any | None) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        listeners.append(sock)
        if behaviour is not None:

            def loop() -> None:
                try:
                    while True:
                        conn, _ = sock.accept()
                        with conn:
                            behaviour(conn)
                except OSError:
                    pass

            threading.Thread(target=loop, daemon=True).start()
        return sock.getsockname()[1]

    yield start
    for sock in listeners:
        sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# -------------------------------------------------------------- request shape


async def test_complete_sends_exact_request_json(httpserver: Any) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hello!")))
    model = OllamaModel(
        MODEL,
        host=host_of(httpserver),
        num_ctx=8192,
        keep_alive="10m",
        options={"top_k": 20},
    )
    settings = ModelSettings(temperature=0.2, max_tokens=64, seed=7, stop=("\n\n",))
    await model.complete(HELLO, settings=settings)
    assert rec.bodies == [
        {
            "model": MODEL,
            "messages": WIRE_HELLO,
            "options": {
                "num_ctx": 8192,
                "top_k": 20,
                "temperature": 0.2,
                "num_predict": 64,
                "seed": 7,
                "stop": ["\n\n"],
            },
            "keep_alive": "10m",
            "stream": False,
            "tools": [],  # the official client always sends an empty tool list
        }
    ]


async def test_defaults_send_only_num_ctx_and_no_logprobs_or_format(
    httpserver: Any, model: OllamaModel
) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    await model.complete(HELLO)
    (body,) = rec.bodies
    assert body["options"] == {"num_ctx": 4096}
    assert body["keep_alive"] == "5m"
    assert body["stream"] is False
    for absent in ("format", "logprobs", "top_logprobs"):
        assert absent not in body


async def test_settings_override_constructor_options(httpserver: Any) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    model = OllamaModel(MODEL, host=host_of(httpserver), options={"temperature": 0.9})
    await model.complete(HELLO, settings=ModelSettings(temperature=0.0))
    assert rec.bodies[0]["options"] == {"num_ctx": 4096, "temperature": 0.0}


async def test_keep_alive_none_leaves_server_default(httpserver: Any) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    model = OllamaModel(MODEL, host=host_of(httpserver), keep_alive=None)
    await model.complete(HELLO)
    assert "keep_alive" not in rec.bodies[0]


def test_host_falls_back_to_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:11434")
    assert OllamaModel(MODEL).host == "http://gpu-box:11434"
    assert OllamaModel(MODEL, host="http://other:1").host == "http://other:1"
    monkeypatch.delenv("OLLAMA_HOST")
    m = OllamaModel(MODEL, num_ctx=2048)
    assert m.host == "http://127.0.0.1:11434"
    assert (m.provider, m.local, m.context_window) == ("ollama", True, 2048)


# ------------------------------------------------------------ reply parsing


async def test_complete_parses_text_usage_timings_finish_reason(
    httpserver: Any, model: OllamaModel
) -> None:
    serve(httpserver, "/api/chat", json_response(chat_body("Hello there!", done_reason="length")))
    reply = await model.complete(HELLO)
    assert isinstance(reply, ModelReply)
    assert reply.text == "Hello there!"
    assert reply.model == MODEL
    assert reply.provider == "ollama"
    assert reply.parsed is None
    assert reply.usage == Usage(prompt_tokens=26, completion_tokens=7)
    assert reply.finish_reason == "length"
    assert reply.timings == pytest.approx(TIMINGS_S)
    assert reply.logprobs is None
    assert reply.latency_s > 0


async def test_structured_format_sends_schema_and_parses(
    httpserver: Any, model: OllamaModel
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    rec = serve(
        httpserver,
        "/api/chat",
        json_response(chat_body('{"city": "Oslo", "population": 709037}')),
    )
    reply = await model.complete(HELLO, schema=schema)
    assert rec.bodies[0]["format"] == schema
    assert reply.parsed == {"city": "Oslo", "population": 709037}


async def test_schema_with_non_json_content_leaves_parsed_empty(
    httpserver: Any, model: OllamaModel
) -> None:
    # Backends never raise on content: the skill runner re-asks, and the call
    # still reaches the ledger with its usage.
    serve(httpserver, "/api/chat", json_response(chat_body("Sure! The city is Oslo.")))
    reply = await model.complete(HELLO, schema={"type": "object"})
    assert reply.text == "Sure! The city is Oslo."
    assert reply.parsed is None
    assert reply.usage.completion_tokens > 0


async def test_logprobs_requested_and_mapped(httpserver: Any, model: OllamaModel) -> None:
    wire_logprobs = [
        {
            "token": "Hello",
            "logprob": -0.01,
            "bytes": [72, 101, 108, 108, 111],
            "top_logprobs": [
                {"token": "Hello", "logprob": -0.01, "bytes": [72, 101, 108, 108, 111]},
                {"token": "Hi", "logprob": -4.6, "bytes": [72, 105]},
            ],
        },
        {
            "token": "!",
            "logprob": -0.2,
            "bytes": [33],
            "top_logprobs": [
                {"token": "!", "logprob": -0.2, "bytes": [33]},
                {"token": ".", "logprob": -1.7, "bytes": [46]},
            ],
        },
    ]
    rec = serve(
        httpserver, "/api/chat", json_response(chat_body("Hello!", logprobs=wire_logprobs))
    )
    reply = await model.complete(HELLO, settings=ModelSettings(logprobs=True, top_logprobs=2))
    assert rec.bodies[0]["logprobs"] is True
    assert rec.bodies[0]["top_logprobs"] == 2
    assert reply.logprobs == (
        TokenLogprob("Hello", -0.01, (("Hello", -0.01), ("Hi", -4.6))),
        TokenLogprob("!", -0.2, (("!", -0.2), (".", -1.7))),
    )
    assert reply.confidence() == pytest.approx(2.718281828 ** (-0.105))


async def test_top_logprobs_alone_turns_logprobs_on(httpserver: Any, model: OllamaModel) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi", logprobs=[])))
    await model.complete(HELLO, settings=ModelSettings(top_logprobs=3))
    assert (rec.bodies[0]["logprobs"], rec.bodies[0]["top_logprobs"]) == (True, 3)


# ---------------------------------------------------------------- streaming


async def test_stream_yields_deltas_then_final_reply(httpserver: Any, model: OllamaModel) -> None:
    rec = serve(
        httpserver, "/api/chat", lambda _r: ndjson(stream_records(["Hel", "lo", " there"]))
    )
    chunks = [chunk async for chunk in model.stream(HELLO)]
    assert rec.bodies[0]["stream"] is True
    assert rec.bodies[0]["messages"] == WIRE_HELLO
    assert [c.delta for c in chunks] == ["Hel", "lo", " there", ""]
    assert all(c.reply is None for c in chunks[:-1])
    final = chunks[-1].reply
    assert final is not None
    assert final.text == "Hello there"
    assert final.usage == Usage(26, 7)
    assert final.finish_reason == "stop"
    assert final.timings == pytest.approx(TIMINGS_S)


async def test_stream_with_schema_parses_the_joined_text(
    httpserver: Any, model: OllamaModel
) -> None:
    rec = serve(
        httpserver, "/api/chat", lambda _r: ndjson(stream_records(['{"ok":', " true}"]))
    )
    chunks = [chunk async for chunk in model.stream(HELLO, schema={"type": "object"})]
    assert rec.bodies[0]["format"] == {"type": "object"}
    assert chunks[-1].reply is not None
    assert chunks[-1].reply.parsed == {"ok": True}


async def test_stream_collects_logprobs_across_records(
    httpserver: Any, model: OllamaModel
) -> None:
    records = stream_records(["A", "B"])
    records[0]["logprobs"] = [{"token": "A", "logprob": -0.5, "bytes": [65], "top_logprobs": []}]
    records[1]["logprobs"] = [{"token": "B", "logprob": -1.5, "bytes": [66], "top_logprobs": []}]
    serve(httpserver, "/api/chat", lambda _r: ndjson(records))
    chunks = [c async for c in model.stream(HELLO, settings=ModelSettings(logprobs=True))]
    final = chunks[-1].reply
    assert final is not None
    assert final.logprobs == (TokenLogprob("A", -0.5), TokenLogprob("B", -1.5))


async def test_truncated_stream_without_done_is_a_transient_error(
    httpserver: Any, model: OllamaModel
) -> None:
    serve(httpserver, "/api/chat", lambda _r: ndjson(stream_records(["Hel", "lo"], done=False)))
    seen: list[str] = []
    with pytest.raises(ModelUnavailableError) as info:
        async for chunk in model.stream(HELLO):
            assert chunk.reply is None
            seen.append(chunk.delta)
    assert seen == ["Hel", "lo"]
    assert "truncated" in str(info.value)
    assert info.value.transient is True


async def test_connection_dropped_mid_stream_is_unavailable(raw_server: Any) -> None:
    first = json.dumps(stream_records(["Hel"])[0]) + "\n"

    def behaviour(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 100000\r\n\r\n" + first.encode()
        )  # then close far short of the promised length

    port = raw_server(behaviour)
    model = OllamaModel(MODEL, host=f"http://127.0.0.1:{port}", timeout=5.0)
    with pytest.raises(ModelUnavailableError) as info:
        async for _ in model.stream(HELLO):
            pass
    assert info.value.transient is True


async def test_malformed_ndjson_line_is_a_typed_error(httpserver: Any, model: OllamaModel) -> None:
    good = json.dumps(stream_records(["Hel"])[0])
    httpserver.expect_request("/api/chat", method="POST").respond_with_data(
        good + "\n{not json\n", content_type="application/x-ndjson"
    )
    with pytest.raises(ModelError) as info:
        async for _ in model.stream(HELLO):
            pass
    # a transport fault: retried at most once by the retry layer
    assert type(info.value) is MalformedResponseError and info.value.transient
    assert "malformed" in str(info.value)


async def test_error_record_inside_stream_is_a_typed_error(
    httpserver: Any, model: OllamaModel
) -> None:
    records: list[dict[str, Any]] = [
        *stream_records(["Hel"], done=False),
        {"error": "llama runner process has terminated"},
    ]
    serve(httpserver, "/api/chat", lambda _r: ndjson(records))
    with pytest.raises(ModelError, match="llama runner process has terminated"):
        async for _ in model.stream(HELLO):
            pass


async def test_stream_404_is_model_not_found(httpserver: Any, model: OllamaModel) -> None:
    serve(
        httpserver,
        "/api/chat",
        json_response({"error": f"model '{MODEL}' not found"}, status=404),
    )
    with pytest.raises(ModelNotFoundError, match=f"ollama pull {MODEL}"):
        async for _ in model.stream(HELLO):
            pass


# ------------------------------------------------------------------- errors


async def test_404_is_model_not_found_with_pull_hint(httpserver: Any, model: OllamaModel) -> None:
    serve(
        httpserver,
        "/api/chat",
        json_response({"error": f"model '{MODEL}' not found"}, status=404),
    )
    with pytest.raises(ModelNotFoundError) as info:
        await model.complete(HELLO)
    assert f"`ollama pull {MODEL}`" in str(info.value)
    assert info.value.model == MODEL
    assert info.value.provider == "ollama"
    assert info.value.transient is False


async def test_not_found_text_with_other_status_is_model_not_found(
    httpserver: Any, model: OllamaModel
) -> None:
    serve(
        httpserver,
        "/api/chat",
        json_response({"error": f'model "{MODEL}" not found, try pulling it first'}, 400),
    )
    with pytest.raises(ModelNotFoundError, match=f"ollama pull {MODEL}"):
        await model.complete(HELLO)


async def test_500_is_transient_http_error(httpserver: Any, model: OllamaModel) -> None:
    serve(
        httpserver,
        "/api/chat",
        json_response({"error": "llama runner process has terminated: exit status 2"}, 500),
    )
    with pytest.raises(ModelHTTPError) as info:
        await model.complete(HELLO)
    assert info.value.status_code == 500
    assert info.value.transient is True
    assert "llama runner process has terminated" in str(info.value)


async def test_400_is_non_transient_http_error(httpserver: Any, model: OllamaModel) -> None:
    serve(httpserver, "/api/chat", json_response({"error": "invalid format"}, 400))
    with pytest.raises(ModelHTTPError) as info:
        await model.complete(HELLO)
    assert (info.value.status_code, info.value.transient) == (400, False)


async def test_malformed_json_body_is_a_typed_error(httpserver: Any, model: OllamaModel) -> None:
    httpserver.expect_request("/api/chat", method="POST").respond_with_data(
        "<html>proxy error</html>", content_type="text/html"
    )
    with pytest.raises(ModelError) as info:
        await model.complete(HELLO)
    # a transport fault: retried at most once by the retry layer
    assert type(info.value) is MalformedResponseError and info.value.transient
    assert "malformed" in str(info.value)


async def test_refused_connection_is_unavailable_naming_host() -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    model = OllamaModel(MODEL, host=host, timeout=5.0)
    with pytest.raises(ModelUnavailableError) as info:
        await model.complete(HELLO)
    message = str(info.value)
    assert host in message
    assert "ollama serve" in message and "OLLAMA_HOST" in message
    assert info.value.transient is True


async def test_refused_connection_while_streaming_is_unavailable() -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    model = OllamaModel(MODEL, host=host, timeout=5.0)
    with pytest.raises(ModelUnavailableError, match="ollama serve"):
        async for _ in model.stream(HELLO):
            pass


async def test_silent_server_is_a_timeout(raw_server: Any) -> None:
    port = raw_server(None)  # listens, never accepts or answers
    model = OllamaModel(MODEL, host=f"http://127.0.0.1:{port}", timeout=0.3)
    with pytest.raises(ModelTimeoutError) as info:
        # wait_for only turns a missing client timeout into a failure instead of a hang.
        await asyncio.wait_for(model.complete(HELLO), timeout=30)
    assert "0.3 s" in str(info.value)
    assert info.value.transient is True


# ------------------------------------------------------------- other calls


async def test_list_models(httpserver: Any, model: OllamaModel) -> None:
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen2",
        "families": ["qwen2"],
        "parameter_size": "494.03M",
        "quantization_level": "Q4_K_M",
    }
    tags = {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                "size": 397821319,
                "digest": "a8b0c51577010a279d933d14c2a8ab4b268079d44c5c8830c0a93900f1827c67",
                "details": details,
            }
            for name in (MODEL, "nomic-embed-text:latest")
        ]
    }
    serve(httpserver, "/api/tags", json_response(tags), method="GET")
    assert await model.list_models() == [MODEL, "nomic-embed-text:latest"]


async def test_embed(httpserver: Any) -> None:
    rec = serve(
        httpserver,
        "/api/embed",
        json_response(
            {
                "model": "nomic-embed-text",
                "embeddings": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": 8,
            }
        ),
    )
    model = OllamaModel("nomic-embed-text", host=host_of(httpserver), num_ctx=2048)
    vectors = await model.embed(["first", "second"])
    assert vectors == [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]
    assert rec.bodies == [
        {
            "model": "nomic-embed-text",
            "input": ["first", "second"],
            "options": {"num_ctx": 2048},
            "keep_alive": "5m",
        }
    ]


async def test_embed_missing_model_says_pull(httpserver: Any) -> None:
    serve(
        httpserver,
        "/api/embed",
        json_response({"error": 'model "nomic-embed-text" not found, try pulling it first'}, 404),
    )
    model = OllamaModel("nomic-embed-text", host=host_of(httpserver))
    with pytest.raises(ModelNotFoundError, match="ollama pull nomic-embed-text"):
        await model.embed(["x"])


# ------------------------------------------------------ loops and the client


def test_complete_sync_works_twice(httpserver: Any, model: OllamaModel) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    assert model.complete_sync(HELLO).text == "Hi"
    assert model.complete_sync(HELLO).text == "Hi"
    assert len(rec.bodies) == 2


def test_client_is_recreated_when_the_event_loop_changes(
    httpserver: Any, model: OllamaModel
) -> None:
    rec = serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    # No aclose between the runs: the first loop's client must not be reused.
    assert asyncio.run(model.complete(HELLO)).text == "Hi"
    first_client = model._client
    assert asyncio.run(model.complete(HELLO)).text == "Hi"
    assert model._client is not first_client
    assert len(rec.bodies) == 2


async def test_aclose_is_idempotent_and_client_comes_back(
    httpserver: Any, model: OllamaModel
) -> None:
    serve(httpserver, "/api/chat", json_response(chat_body("Hi")))
    await model.complete(HELLO)
    await model.aclose()
    await model.aclose()
    assert (await model.complete(HELLO)).text == "Hi"
    await model.aclose()
