"""OpenAIModel against a real llama_cpp.server, and against scripted HTTP faults."""

from __future__ import annotations

import json
import time
from typing import Literal

import pytest
from pydantic import BaseModel
from werkzeug import Request, Response

from slmgraph._errors import (
    ConfigError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
    RequestTooLargeError,
)
from slmgraph.models._base import Message, ModelSettings
from slmgraph.models._openai import OpenAIModel

try:
    from tests.llama_server import free_port
except ImportError:  # tests/ is on sys.path instead of its parent
    from llama_server import free_port

SENTIMENT = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["sentiment"],
}


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative"]


HELLO = [Message("system", "You are a helpful assistant."), Message("user", "Say hello in one short sentence.")]
REVIEW = [
    Message("system", "Classify the sentiment of the review. Answer in JSON."),
    Message("user", "Review: I loved this film, it was wonderful!"),
]
SHORT = ModelSettings(temperature=0.0, max_tokens=24, seed=7)


@pytest.fixture
async def model(server_url: str):
    m = OpenAIModel("smollm2", base_url=server_url, context_window=2048)
    yield m
    await m.aclose()


# -- the real server ------------------------------------------------------------------


@pytest.mark.server
async def test_plain_chat_returns_text_and_usage(model: OpenAIModel) -> None:
    reply = await model.complete(HELLO, settings=SHORT)
    assert reply.text.strip()
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.finish_reason in {"stop", "length"}
    assert reply.provider == "openai" and reply.model == "smollm2"
    assert reply.parsed is None and reply.logprobs is None
    assert model.local is True  # loopback base_url


@pytest.mark.server
async def test_streaming_yields_deltas_and_final_reply(model: OpenAIModel) -> None:
    chunks = [c async for c in model.stream(HELLO, settings=SHORT)]
    deltas = [c for c in chunks if c.reply is None]
    final = chunks[-1].reply
    assert len(deltas) > 1
    assert final is not None and all(c.reply is None for c in chunks[:-1])
    assert final.text == "".join(c.delta for c in chunks)
    assert final.finish_reason in {"stop", "length"}
    assert final.usage.completion_tokens == len(deltas)  # llama_cpp.server sends no usage


@pytest.mark.server
async def test_structured_output_is_schema_valid(model: OpenAIModel) -> None:
    reply = await model.complete(REVIEW, schema=SENTIMENT, settings=ModelSettings(temperature=0.0, max_tokens=32))
    assert Sentiment.model_validate(reply.parsed).sentiment in {"positive", "negative"}
    # llama_cpp.server rejects {"type": "json_schema"}; "auto" fell back for good.
    assert model.schema_mode == "json_object"


@pytest.mark.server
async def test_structured_output_streamed(model: OpenAIModel) -> None:
    chunks = [c async for c in model.stream(REVIEW, schema=SENTIMENT, settings=ModelSettings(max_tokens=32))]
    Sentiment.model_validate(chunks[-1].reply.parsed)


@pytest.mark.server
async def test_json_schema_response_format_is_rejected_by_llama_cpp_server(server_url: str) -> None:
    m = OpenAIModel("smollm2", base_url=server_url, schema_mode="json_schema")
    with pytest.raises(ModelHTTPError) as info:
        await m.complete(REVIEW, schema=SENTIMENT, settings=SHORT)
    # It validates response_format.type against "text" | "json_object" but answers 500.
    assert info.value.status_code == 500 and "json_object" in str(info.value)
    assert not info.value.transient  # a validation failure: retrying cannot help
    await m.aclose()


@pytest.mark.server
async def test_logprobs_with_alternatives(model: OpenAIModel) -> None:
    reply = await model.complete(HELLO, settings=ModelSettings(max_tokens=8, logprobs=True, top_logprobs=3))
    assert reply.logprobs and len(reply.logprobs) == reply.usage.completion_tokens
    assert all(t.logprob <= 0 for t in reply.logprobs)
    assert all(1 <= len(t.top) <= 3 for t in reply.logprobs)
    assert 0 < reply.confidence() <= 1


@pytest.mark.server
async def test_logprobs_without_top_logprobs(model: OpenAIModel) -> None:
    # The server gives no logprobs unless top_logprobs is sent; the backend sends 0.
    reply = await model.complete(HELLO, settings=ModelSettings(max_tokens=4, logprobs=True))
    assert reply.logprobs and len(reply.logprobs) == reply.usage.completion_tokens


@pytest.mark.server
async def test_list_models_names_the_gguf(model: OpenAIModel) -> None:
    names = await model.list_models()
    assert len(names) == 1 and names[0].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.server
async def test_unknown_model_name_is_served_by_the_default_model(server_url: str) -> None:
    # llama_cpp.server maps any model name it does not know to its default model.
    m = OpenAIModel("no-such-model", base_url=server_url)
    reply = await m.complete(HELLO, settings=SHORT)
    assert reply.text and reply.model == "no-such-model"
    await m.aclose()


@pytest.mark.server
async def test_unknown_route_is_model_not_found(server_url: str) -> None:
    m = OpenAIModel("smollm2", base_url=server_url.replace("/v1", "/nope/v1"))
    with pytest.raises(ModelNotFoundError) as info:
        await m.complete(HELLO, settings=SHORT)
    assert "smollm2" in str(info.value) and "/v1" in str(info.value)
    await m.aclose()


@pytest.mark.server
async def test_prompt_over_context_is_request_too_large(model: OpenAIModel) -> None:
    with pytest.raises(RequestTooLargeError) as info:
        await model.complete([Message("user", "hello world " * 2000)], settings=SHORT)
    assert info.value.limit == 2048 and info.value.tokens > 2048


@pytest.mark.server
def test_sync_calls_in_separate_event_loops(server_url: str) -> None:
    m = OpenAIModel("smollm2", base_url=server_url)
    first = m.complete_sync(HELLO, settings=SHORT)
    second = m.complete_sync(HELLO, settings=SHORT)  # a fresh loop needs a fresh client
    assert first.text and second.text
    assert not m._clients  # each loop's client was closed with its loop


# -- connection and configuration ---------------------------------------------------


async def test_refused_connection_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    m = OpenAIModel("smollm2", base_url=url)
    with pytest.raises(ModelUnavailableError) as info:
        await m.complete(HELLO)
    assert info.value.transient and url in str(info.value)
    with pytest.raises(ModelUnavailableError):
        await m.list_models()
    await m.aclose()


def test_missing_api_key_for_remote_server_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        OpenAIModel("gpt-4o-mini", base_url="https://api.example.com/v1")
    assert info.value.field == "api_key" and "OPENAI_API_KEY" in str(info.value)
    with pytest.raises(ConfigError):
        OpenAIModel("gpt-4o-mini")  # OpenAI itself


def test_env_fallbacks_and_locality(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    remote = OpenAIModel("m")
    assert remote.base_url == "https://api.example.com/v1" and remote.local is False
    monkeypatch.delenv("OPENAI_API_KEY")
    assert OpenAIModel("m", base_url="http://localhost:8080/v1").local is True
    assert OpenAIModel("m", base_url="http://[::1]:8080/v1").local is True
    assert OpenAIModel("m", base_url="http://127.0.0.1:8080/v1", local=False).local is False


# -- scripted HTTP faults (pytest-httpserver) ------------------------------------------


def _sse(*events: dict) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def _chunk(content: str | None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip


def _completion(content: str) -> dict:
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }  # fmt: skip


@pytest.fixture
async def fake(httpserver):
    m = OpenAIModel("m", base_url=httpserver.url_for("/v1"), timeout=5)
    yield m
    await m.aclose()


async def test_stream_without_finish_reason_is_transient_error(httpserver, fake: OpenAIModel) -> None:
    body = _sse(_chunk("Hel"), _chunk("lo"))  # ends without a finish_reason
    httpserver.expect_request("/v1/chat/completions").respond_with_data(body, content_type="text/event-stream")
    seen = []
    with pytest.raises(ModelUnavailableError) as info:
        async for chunk in fake.stream(HELLO):
            seen.append(chunk)
    assert info.value.transient and "finish_reason" in str(info.value)
    assert [c.delta for c in seen] == ["Hel", "lo"] and all(c.reply is None for c in seen)


async def test_stream_options_dropped_when_rejected(httpserver, fake: OpenAIModel) -> None:
    def handler(request: Request) -> Response:
        if "stream_options" in request.get_json():
            return Response(json.dumps({"error": {"message": "unknown field stream_options"}}), status=400)
        return Response(_sse(_chunk("ok"), _chunk(None, "stop")), content_type="text/event-stream")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(handler)
    m = fake
    for _ in range(2):
        chunks = [c async for c in m.stream(HELLO)]
        assert chunks[-1].reply.text == "ok" and chunks[-1].reply.finish_reason == "stop"
    assert m._stream_usage is False
    assert len(httpserver.log) == 3  # one rejected call, then it is not sent again


async def test_logprobs_dropped_when_the_server_refuses_them(httpserver, fake: OpenAIModel) -> None:
    def handler(request: Request) -> Response:
        if "logprobs" in request.get_json() or "top_logprobs" in request.get_json():
            return Response(json.dumps({"error": {"message": "logprobs is not supported with this model"}}), status=400)
        return Response(json.dumps(_completion('{"sentiment": "positive"}')), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(handler)
    wants = ModelSettings(temperature=0.0, logprobs=True, top_logprobs=2)
    for _ in range(2):
        reply = await fake.complete(REVIEW, schema=SENTIMENT, settings=wants)
        assert reply.parsed == {"sentiment": "positive"} and reply.logprobs is None
    assert len(httpserver.log) == 3  # one refused call, then logprobs are not asked for again


async def test_a_400_about_something_else_is_not_retried_without_logprobs(httpserver, fake: OpenAIModel) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json({"error": {"message": "bad temperature"}}, status=400)
    with pytest.raises(ModelHTTPError):
        await fake.complete(REVIEW, settings=ModelSettings(logprobs=True))
    assert len(httpserver.log) == 1


async def test_stream_usage_from_server_when_given(httpserver, fake: OpenAIModel) -> None:
    usage = {**_chunk(None), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    body = _sse(_chunk("a"), _chunk("b"), _chunk(None, "stop"), usage)
    httpserver.expect_request("/v1/chat/completions").respond_with_data(body, content_type="text/event-stream")
    chunks = [c async for c in fake.stream(HELLO)]
    assert (chunks[-1].reply.usage.prompt_tokens, chunks[-1].reply.usage.completion_tokens) == (9, 2)


@pytest.mark.parametrize(("status", "transient"), [(500, True), (429, True), (400, False)])
async def test_http_status_maps_to_model_http_error(
    httpserver, fake: OpenAIModel, status: int, transient: bool
) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json({"error": {"message": "nope"}}, status=status)
    with pytest.raises(ModelHTTPError) as info:
        await fake.complete(HELLO)
    assert info.value.status_code == status and info.value.transient is transient


async def test_401_says_to_check_the_key(httpserver, fake: OpenAIModel) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json({"error": {"message": "bad key"}}, status=401)
    with pytest.raises(ModelHTTPError) as info:
        await fake.complete(HELLO)
    assert info.value.status_code == 401 and "OPENAI_API_KEY" in str(info.value)


async def test_slow_server_is_timeout(httpserver) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(slow)
    m = OpenAIModel("m", base_url=httpserver.url_for("/v1"), timeout=0.2)
    with pytest.raises(ModelTimeoutError) as info:
        await m.complete(HELLO)
    assert info.value.transient
    await m.aclose()


async def test_reply_cut_at_max_tokens_is_returned_unparsed(httpserver, fake: OpenAIModel) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json(
        {
            "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"sentim'},
                         "finish_reason": "length"}],
        }  # fmt: skip
    )
    reply = await fake.complete(REVIEW, schema=SENTIMENT)
    assert (reply.text, reply.parsed, reply.finish_reason) == ('{"sentim', None, "length")


async def test_request_carries_settings_and_schema(httpserver, fake: OpenAIModel) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json(
        {
            "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"sentiment": "positive"}'},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }  # fmt: skip
    )
    settings = ModelSettings(temperature=0.3, max_tokens=12, seed=1, stop=("\n",), logprobs=True, top_logprobs=2)
    reply = await fake.complete(REVIEW, schema=SENTIMENT, settings=settings)
    assert reply.parsed == {"sentiment": "positive"} and reply.usage.total_tokens == 9
    sent = httpserver.log[0][0].get_json()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SENTIMENT
    assert sent["response_format"]["json_schema"]["strict"] is False  # no additionalProperties: false
    assert {k: sent[k] for k in ("temperature", "max_tokens", "seed", "stop", "logprobs", "top_logprobs")} == {
        "temperature": 0.3, "max_tokens": 12, "seed": 1, "stop": ["\n"], "logprobs": True, "top_logprobs": 2,
    }  # fmt: skip
