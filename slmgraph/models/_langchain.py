"""An adapter that lets any LangChain chat model back an slmgraph skill."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage

from .._errors import (
    ModelError,
    ModelHTTPError,
    ModelTimeoutError,
    ModelUnavailableError,
    SlmGraphError,
)
from ._base import Message, Model, ModelReply, ModelSettings, StreamChunk, Usage, try_parse_json

__all__ = ["LangChainModel", "to_langchain_messages"]


def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """Convert slmgraph messages to LangChain ones.

    A ``tool`` message has no tool call to answer here, so it becomes a human
    message marked ``[tool result]``, which every chat model accepts.
    """
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(content=m.content))
        elif m.role == "assistant":
            out.append(AIMessage(content=m.content))
        elif m.role == "tool":
            out.append(HumanMessage(content=f"[tool result]\n{m.content}"))
        else:
            out.append(HumanMessage(content=m.content))
    return out


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _model_name(chat_model: BaseChatModel) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(chat_model).__name__


class LangChainModel(Model):
    """Wraps a LangChain ``BaseChatModel``.

    Generation settings other than ``stop`` belong to the chat model's own
    configuration (LangChain has no portable way to pass them per call). When the
    chat model reports no ``usage_metadata``, usage is estimated with
    :meth:`count_tokens`.

    Args:
        chat_model: any LangChain chat model.
        name: the name for replies and the ledger; defaults to the chat model's
            ``model_name`` / ``model`` attribute, or its class name.
        context_window: tokens the model accepts.
        local: whether calls stay on this machine.
    """

    provider = "langchain"

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        name: str | None = None,
        context_window: int = 8192,
        local: bool = False,
    ) -> None:
        self.chat_model = chat_model
        self.name = name or _model_name(chat_model)
        self.context_window = context_window
        self.local = local

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """Call ``chat_model.ainvoke``; with ``schema``, parse the reply as JSON."""
        settings = settings or ModelSettings()
        started = time.perf_counter()
        try:
            result = await self.chat_model.ainvoke(
                to_langchain_messages(messages), stop=list(settings.stop) or None
            )
        except SlmGraphError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        return self._reply(result, messages, schema, time.perf_counter() - started)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream with ``chat_model.astream``; the last chunk carries the reply."""
        settings = settings or ModelSettings()
        started = time.perf_counter()
        total: AIMessageChunk | None = None
        try:
            async for chunk in self.chat_model.astream(
                to_langchain_messages(messages), stop=list(settings.stop) or None
            ):
                total = chunk if total is None else total + chunk
                delta = _text(chunk)
                if delta:
                    yield StreamChunk(delta=delta)
        except SlmGraphError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        result = total if total is not None else AIMessage(content="")
        yield StreamChunk(delta="", reply=self._reply(result, messages, schema, time.perf_counter() - started))

    def _reply(
        self, result: BaseMessage, messages: Sequence[Message], schema: dict[str, Any] | None, latency: float
    ) -> ModelReply:
        text = _text(result)
        meta = getattr(result, "usage_metadata", None)
        if meta:
            usage = Usage(meta.get("input_tokens", 0), meta.get("output_tokens", 0))
        else:
            usage = Usage(sum(self.count_tokens(m.content) for m in messages), self.count_tokens(text))
        info = result.response_metadata or {}
        finish = info.get("finish_reason") or info.get("stop_reason") or info.get("done_reason")
        return ModelReply(
            text=text,
            parsed=try_parse_json(text) if schema is not None else None,
            model=self.name,
            provider=self.provider,
            usage=usage,
            latency_s=latency,
            finish_reason=finish,
        )

    def _error(self, exc: Exception) -> SlmGraphError:
        """Map a provider's exception to the slmgraph error tree, by its shape."""
        ctx = {"model": self.name, "provider": self.provider}
        kind = type(exc).__name__
        status = getattr(exc, "status_code", None)
        if isinstance(exc, TimeoutError) or "Timeout" in kind:
            return ModelTimeoutError(f"the LangChain model {self.name!r} timed out ({kind}: {exc})", **ctx)
        if isinstance(exc, ConnectionError) or "Connection" in kind:
            return ModelUnavailableError(
                f"the LangChain model {self.name!r} could not reach its server ({kind}: {exc}); "
                "check that the server is running and its URL",
                **ctx,
            )
        if isinstance(status, int):
            return ModelHTTPError(
                f"the LangChain model {self.name!r} got HTTP {status}: {exc}", status_code=status, **ctx
            )
        return ModelError(f"the LangChain model {self.name!r} raised {kind}: {exc}", **ctx)
