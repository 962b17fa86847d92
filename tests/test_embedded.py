"""LlamaCppModel: the real SmolLM2-135M model, run in-process."""

from __future__ import annotations

import asyncio
import math
from enum import Enum

import pytest
from pydantic import BaseModel

from slmgraph._errors import ConfigError, MissingDependencyError, RequestTooLargeError
from slmgraph.models import _llamacpp
from slmgraph.models._base import Message, Model, ModelSettings
from slmgraph.models._llamacpp import LlamaCppModel, default_gguf_path

pytestmark = pytest.mark.embedded


class Mood(str, Enum):
    positive = "positive"
    negative = "negative"


class Review(BaseModel):
    sentiment: Mood


REVIEW = [
    Message("system", "Classify the sentiment of the review. Answer in JSON."),
    Message("user", "Review: I loved this film, it was wonderful!"),
]


@pytest.fixture(scope="module")
def smol() -> LlamaCppModel:
    return LlamaCppModel()


def test_default_weights_are_found() -> None:
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_missing_weights_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_llamacpp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError) as info:
        default_gguf_path()
    assert info.value.extra == "embedded"


def test_missing_model_file_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        LlamaCppModel(tmp_path / "nope.gguf")
    assert info.value.field == "model_path"


def test_identity(smol: LlamaCppModel) -> None:
    assert (smol.provider, smol.local, smol.context_window) == ("llamacpp", True, 2048)
    assert smol.name == "SmolLM2-135M-Instruct.Q4_1"


async def test_schema_constrained_output_validates(smol: LlamaCppModel) -> None:
    schema = Review.model_json_schema()  # an enum field: uses $defs / $ref
    reply = await smol.complete(REVIEW, schema=schema, settings=ModelSettings(temperature=0.0, max_tokens=48))
    review = Review.model_validate(reply.parsed)
    assert isinstance(review.sentiment, Mood)
    assert reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.provider == "llamacpp" and reply.model == smol.name


async def test_plain_text_reply(smol: LlamaCppModel) -> None:
    reply = await smol.complete([Message("user", "Say hello.")], settings=ModelSettings(max_tokens=16, seed=3))
    assert reply.text.strip() and reply.parsed is None
    assert reply.usage.completion_tokens <= 16
    assert reply.logprobs is None  # not loaded with logprobs=True


def test_model_is_loaded_once_and_shared(smol: LlamaCppModel) -> None:
    other = LlamaCppModel(name="another-name")
    assert other.llama is smol.llama
    assert LlamaCppModel(default_gguf_path()).llama is smol.llama


def test_count_tokens_uses_the_real_tokenizer(smol: LlamaCppModel) -> None:
    text = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."
    n = smol.count_tokens(text)
    assert 0 < n < Model.count_tokens(smol, text)  # the base class's bytes/3 estimate
    assert n == len(smol.llama.tokenize(text.encode(), add_bos=False))


async def test_event_loop_keeps_running_during_a_call(smol: LlamaCppModel) -> None:
    engine = _llamacpp._load(smol.model_path, smol.n_ctx, smol.logprobs, None)
    ticks_while_generating = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks_while_generating
        while not done.is_set():
            if engine.lock.locked():  # held only while llama.cpp is generating
                ticks_while_generating += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await smol.complete([Message("user", "Write a short poem about rain.")], settings=ModelSettings(max_tokens=48))
    done.set()
    await task
    # Had generation run on the loop's thread, the ticker could never see the lock held.
    assert ticks_while_generating > 0


async def test_concurrent_calls_are_serialised(smol: LlamaCppModel) -> None:
    settings = ModelSettings(max_tokens=12)
    replies = await asyncio.gather(
        *(smol.complete([Message("user", f"Name a colour. ({i})")], settings=settings) for i in range(3))
    )
    assert all(r.text for r in replies)


async def test_oversized_prompt_is_refused(smol: LlamaCppModel) -> None:
    with pytest.raises(RequestTooLargeError) as info:
        await smol.complete([Message("user", "hello world " * 2000)])
    assert info.value.limit == 2048 and info.value.tokens >= 2048


async def test_prompt_that_fits_only_without_template_is_refused() -> None:
    tiny = LlamaCppModel(n_ctx=256)
    text = "hello world " * 200
    while tiny.count_tokens(text) >= 254:  # under n_ctx by itself, over it with the chat template
        text = text[:-12]
    with pytest.raises(RequestTooLargeError) as info:
        await tiny.complete([Message("user", text)])
    # llama.cpp's own count, template included (slmgraph's pre-check saw < 254).
    assert info.value.limit == 256 and info.value.tokens >= 256


async def test_stream_yields_deltas_then_reply(smol: LlamaCppModel) -> None:
    chunks = [
        c async for c in smol.stream(REVIEW, schema=Review.model_json_schema(), settings=ModelSettings(max_tokens=48))
    ]
    assert len(chunks) > 2 and all(c.reply is None for c in chunks[:-1])
    final = chunks[-1].reply
    assert final.text == "".join(c.delta for c in chunks)
    Review.model_validate(final.parsed)
    assert final.usage.completion_tokens == len(chunks) - 1


async def test_abandoned_stream_releases_the_model(smol: LlamaCppModel) -> None:
    stream = smol.stream([Message("user", "Count from one to fifty.")], settings=ModelSettings(max_tokens=200))
    async for _ in stream:
        break
    await stream.aclose()
    reply = await smol.complete([Message("user", "Say hi.")], settings=ModelSettings(max_tokens=8))
    assert reply.text


async def test_logprobs_when_loaded_for_them() -> None:
    model = LlamaCppModel(n_ctx=512, logprobs=True)
    reply = await model.complete(
        [Message("user", "Say yes.")], settings=ModelSettings(max_tokens=6, logprobs=True, top_logprobs=2)
    )
    assert reply.logprobs and len(reply.logprobs) == reply.usage.completion_tokens
    assert all(t.logprob <= 0 and 1 <= len(t.top) <= 2 for t in reply.logprobs)
    assert 0 < reply.confidence() <= 1 and not math.isnan(reply.confidence())


async def test_logprobs_without_top_logprobs() -> None:
    model = LlamaCppModel(n_ctx=512, logprobs=True)
    reply = await model.complete([Message("user", "Say no.")], settings=ModelSettings(max_tokens=4, logprobs=True))
    assert reply.logprobs and len(reply.logprobs) == reply.usage.completion_tokens


def test_string_length_bounds_are_left_to_pydantic_not_the_grammar():
    from slmgraph.models._llamacpp import _grammar_safe

    schema = {"type": "object", "properties": {"q": {"type": "string", "maxLength": 1200, "minLength": 3}},
              "required": ["q"], "$defs": {"X": {"type": "array", "items": {"type": "string", "maxLength": 5}}}}
    safe = _grammar_safe(schema)
    assert safe["properties"]["q"] == {"type": "string"}
    assert safe["$defs"]["X"]["items"] == {"type": "string"}
    assert schema["properties"]["q"]["maxLength"] == 1200  # the caller's schema is untouched
