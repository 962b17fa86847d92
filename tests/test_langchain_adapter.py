"""LangChainModel against langchain-core's fake chat models."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from slmgraph._errors import ModelError, ModelTimeoutError
from slmgraph.models._base import Message
from slmgraph.models._langchain import LangChainModel, to_langchain_messages

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


class RecordingFake(FakeListChatModel):
    """Remembers the messages of each call."""

    seen: list[list[BaseMessage]] = []

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> AIMessage:  # noqa: A002
        self.seen.append(list(input))
        return await super().ainvoke(input, config, **kwargs)


async def test_text_reply_and_estimated_usage() -> None:
    model = LangChainModel(FakeListChatModel(responses=["hello there"]))
    reply = await model.complete([Message("user", "hi")])
    assert reply.text == "hello there"
    assert reply.parsed is None
    assert reply.provider == "langchain"
    assert reply.model == "FakeListChatModel"  # the class name: no model_name attribute
    # No usage_metadata from this fake: usage is estimated, never zero.
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


async def test_usage_metadata_and_finish_reason_are_used() -> None:
    msg = AIMessage(
        content="ok",
        usage_metadata={"input_tokens": 11, "output_tokens": 3, "total_tokens": 14},
        response_metadata={"finish_reason": "stop"},
    )
    model = LangChainModel(GenericFakeChatModel(messages=iter([msg])), name="fake-1")
    reply = await model.complete([Message("user", "hi")])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 3)
    assert reply.finish_reason == "stop"
    assert reply.model == "fake-1"


async def test_json_reply_is_parsed_with_schema() -> None:
    model = LangChainModel(FakeListChatModel(responses=['```json\n{"label": "refund"}\n```']))
    reply = await model.complete([Message("user", "classify")], schema=SCHEMA)
    assert reply.parsed == {"label": "refund"}


async def test_non_json_reply_with_schema_is_returned_unparsed() -> None:
    model = LangChainModel(FakeListChatModel(responses=["sorry, no"]))
    reply = await model.complete([Message("user", "classify")], schema=SCHEMA)
    assert (reply.text, reply.parsed) == ("sorry, no", None)


def test_message_roles_convert() -> None:
    converted = to_langchain_messages(
        [Message("system", "be brief"), Message("user", "q"), Message("assistant", "a"), Message("tool", "42")]
    )
    assert [type(m) for m in converted] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert [m.content for m in converted[:3]] == ["be brief", "q", "a"]
    assert "42" in converted[3].content


async def test_model_receives_converted_messages() -> None:
    fake = RecordingFake(responses=["fine"])
    fake.seen.clear()
    await LangChainModel(fake).complete([Message("system", "sys"), Message("user", "u")])
    assert [(type(m), m.content) for m in fake.seen[0]] == [(SystemMessage, "sys"), (HumanMessage, "u")]


async def test_stream_yields_deltas_then_reply() -> None:
    model = LangChainModel(GenericFakeChatModel(messages=iter([AIMessage(content="one two three")])))
    chunks = [c async for c in model.stream([Message("user", "count")])]
    assert len(chunks) > 2  # the fake streams word by word
    assert chunks[-1].reply is not None
    assert "".join(c.delta for c in chunks) == chunks[-1].reply.text == "one two three"


async def test_provider_errors_are_typed() -> None:
    class Slow(FakeListChatModel):
        async def ainvoke(self, *a: Any, **k: Any) -> AIMessage:
            raise TimeoutError("read timed out")

    with pytest.raises(ModelTimeoutError):
        await LangChainModel(Slow(responses=["x"])).complete([Message("user", "hi")])

    class Broken(FakeListChatModel):
        async def ainvoke(self, *a: Any, **k: Any) -> AIMessage:
            raise KeyError("boom")

    with pytest.raises(ModelError) as info:
        await LangChainModel(Broken(responses=["x"])).complete([Message("user", "hi")])
    assert isinstance(info.value.__cause__, KeyError)
