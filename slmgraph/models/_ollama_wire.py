"""Ollama's ``/api/chat`` wire format: the request :class:`~slmgraph.OllamaModel` sends
and how a reply record (whole, or a stream's ``done`` record) becomes a :class:`ModelReply`.

Where the request goes, with which timeouts, and how failures are translated, lives
in :mod:`._ollama`. Field names follow the ``ollama`` package's own response types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import Message, ModelReply, ModelSettings, TokenLogprob, Usage, try_parse_json

__all__ = ["PROVIDER", "chat_request", "chat_options", "to_reply", "token_logprobs"]

PROVIDER = "ollama"

# Wire name of each Ollama duration (nanoseconds) -> key in ModelReply.timings (seconds).
_TIMINGS = {
    "total_duration": "total",
    "load_duration": "load",
    "prompt_eval_duration": "prompt_eval",
    "eval_duration": "eval",
}


def chat_options(num_ctx: int, options: dict[str, Any], settings: ModelSettings | None) -> dict[str, Any]:
    """Ollama's ``options``: the context window, the model's own options, then the
    per-call settings (which win)."""
    opts: dict[str, Any] = {"num_ctx": num_ctx, **options}
    if settings is not None:
        per_call = {
            "temperature": settings.temperature,
            "num_predict": settings.max_tokens,
            "seed": settings.seed,
            "stop": list(settings.stop) or None,
        }
        opts.update({k: v for k, v in per_call.items() if v is not None})
    return opts


def chat_request(
    name: str,
    messages: Sequence[Message],
    schema: dict[str, Any] | None,
    settings: ModelSettings | None,
    *,
    options: dict[str, Any],
    keep_alive: str | float | None,
    stream: bool,
) -> dict[str, Any]:
    """The keyword arguments of ``AsyncClient.chat`` (the JSON body); ``options`` as
    made by :func:`chat_options`."""
    kwargs: dict[str, Any] = {
        "model": name,
        "messages": [m.to_dict() for m in messages],
        "format": schema,
        "options": options,
        "keep_alive": keep_alive,
        "stream": stream,
    }
    if settings is not None and (settings.logprobs or settings.top_logprobs):
        kwargs["logprobs"] = True
        if settings.top_logprobs:
            kwargs["top_logprobs"] = settings.top_logprobs
    return kwargs


def token_logprobs(raw: Sequence[Any] | None) -> list[TokenLogprob] | None:
    """Map the client's ``Logprob`` records to slmgraph's :class:`TokenLogprob`."""
    if raw is None:
        return None
    return [
        TokenLogprob(
            token=lp.token,
            logprob=lp.logprob,
            top=tuple((alt.token, alt.logprob) for alt in lp.top_logprobs or ()),
        )
        for lp in raw
    ]


def to_reply(
    text: str,
    final: Any,
    *,
    model: str,
    logprobs: list[TokenLogprob] | None,
    schema: dict[str, Any] | None,
    latency_s: float,
) -> ModelReply:
    """The reply from the text and the final record's model, counts, durations and reason."""
    timings = {
        key: getattr(final, wire) / 1e9
        for wire, key in _TIMINGS.items()
        if getattr(final, wire) is not None
    }
    return ModelReply(
        text=text,
        model=final.model or model,
        provider=PROVIDER,
        parsed=try_parse_json(text) if schema is not None else None,
        usage=Usage(
            prompt_tokens=final.prompt_eval_count or 0,
            completion_tokens=final.eval_count or 0,
        ),
        latency_s=latency_s,
        logprobs=tuple(logprobs) if logprobs is not None else None,
        finish_reason=final.done_reason,
        timings=timings,
    )
