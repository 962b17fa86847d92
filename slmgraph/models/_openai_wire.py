"""The OpenAI chat-completions wire format: the request body :class:`~slmgraph.OpenAIModel`
sends and how a completion (whole or streamed) becomes a :class:`ModelReply`.

Where the body goes, with which key and timeouts, lives in :mod:`._openai`; how the
SDK's errors map onto slmgraph's tree, in :mod:`._openai_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from ._base import Message, ModelReply, ModelSettings, TokenLogprob, Usage, try_parse_json

__all__ = ["SchemaMode", "chat_request", "response_format", "to_reply", "usage_of", "token_logprobs", "StreamReader"]

PROVIDER = "openai"

SchemaMode = Literal["auto", "json_schema", "json_object"]


def chat_request(
    name: str,
    messages: Sequence[Message],
    schema: dict[str, Any] | None,
    settings: ModelSettings,
    *,
    schema_mode: SchemaMode,
    logprobs: bool = True,
) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` (the JSON body).

    ``logprobs=False`` leaves logprobs out even when ``settings`` asks for them (the
    server has refused them before).
    """
    kwargs: dict[str, Any] = {"model": name, "messages": [m.to_dict() for m in messages]}
    for key in ("temperature", "max_tokens", "seed"):
        value = getattr(settings, key)
        if value is not None:
            kwargs[key] = value
    if settings.stop:
        kwargs["stop"] = list(settings.stop)
    if settings.logprobs and logprobs:
        kwargs["logprobs"] = True
        # llama_cpp.server returns no logprobs at all without top_logprobs.
        kwargs["top_logprobs"] = settings.top_logprobs or 0
    if schema is not None:
        kwargs["response_format"] = response_format(schema, schema_mode)
    return kwargs


def response_format(schema: dict[str, Any], schema_mode: SchemaMode) -> dict[str, Any]:
    """``response_format`` for ``schema``: OpenAI's ``json_schema`` form, or the
    ``json_object`` form with the schema beside it (``llama_cpp.server``)."""
    if schema_mode == "json_object":
        return {"type": "json_object", "schema": schema}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": _strict_ok(schema)},
    }


def _strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts ``schema``: every object closes
    ``additionalProperties`` and requires all its properties."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False:
                return False
            if set(schema.get("required", ())) != set(props):
                return False
        return all(_strict_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(_strict_ok(v) for v in schema)
    return True


def usage_of(raw: Any) -> Usage:
    """The token counts of a completion's ``usage`` object."""
    return Usage(raw.prompt_tokens or 0, raw.completion_tokens or 0)


def token_logprobs(block: Any) -> list[TokenLogprob]:
    """The per-token logprobs of a choice's ``logprobs`` block (empty without one)."""
    if block is None or not block.content:
        return []
    return [
        TokenLogprob(
            token=item.token,
            logprob=item.logprob,
            top=tuple((alt.token, alt.logprob) for alt in (item.top_logprobs or ())),
        )
        for item in block.content
    ]


def to_reply(
    text: str,
    *,
    model: str,
    schema: dict[str, Any] | None,
    usage: Usage,
    latency_s: float,
    logprobs: Sequence[TokenLogprob],
    finish_reason: str | None,
) -> ModelReply:
    """The reply, with the text parsed as JSON when a schema was sent."""
    return ModelReply(
        text=text,
        parsed=try_parse_json(text) if schema is not None else None,
        model=model,
        provider=PROVIDER,
        usage=usage,
        latency_s=latency_s,
        logprobs=tuple(logprobs) or None,
        finish_reason=finish_reason,
    )


class StreamReader:
    """Folds the chunks of a streamed completion: text, logprobs, usage, finish reason."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def feed(self, chunk: Any) -> str:
        """Take one chunk; returns its text delta (``""`` when it has none)."""
        if chunk.usage is not None:
            self.usage = usage_of(chunk.usage)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        self.logprobs.extend(token_logprobs(choice.logprobs))
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        delta = choice.delta.content if choice.delta is not None else None
        if delta:
            self.parts.append(delta)
        return delta or ""
