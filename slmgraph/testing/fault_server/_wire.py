"""Response bodies of the Ollama and OpenAI wire protocols, as the fault server sends them.

Field names follow the ``ollama`` package's ``_types.py`` (``ChatResponse``,
``ListResponse``, ``EmbedResponse``) and the OpenAI chat-completions API.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

__all__ = [
    "ollama_chat",
    "ollama_chunk",
    "ollama_done",
    "ollama_tags",
    "ollama_embed",
    "ollama_error",
    "openai_chat",
    "openai_chunk",
    "openai_usage_chunk",
    "openai_models",
    "openai_error",
    "split_reply",
]

_NS = 1_000_000_000


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def split_reply(text: str, pieces: int) -> list[str]:
    """``text`` cut into at most ``pieces`` non-empty parts that join back to it."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    step = -(-len(text) // pieces)
    return [text[i : i + step] for i in range(0, len(text), step)]


def _counts(prompt_tokens: int, completion_tokens: int, seconds: float) -> dict[str, Any]:
    return {
        "total_duration": int(seconds * _NS),
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": completion_tokens,
        "eval_duration": int(seconds * _NS),
    }


def ollama_chat(model: str, text: str, prompt_tokens: int, seconds: float) -> dict[str, Any]:
    """A complete non-streamed ``/api/chat`` reply."""
    return {
        "model": model,
        "created_at": _now_iso(),
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": "stop",
        **_counts(prompt_tokens, max(1, len(text) // 4), seconds),
    }


def ollama_chunk(model: str, piece: str) -> dict[str, Any]:
    """One NDJSON record of a streamed ``/api/chat`` reply."""
    return {"model": model, "created_at": _now_iso(), "message": {"role": "assistant", "content": piece}, "done": False}


def ollama_done(model: str, text: str, prompt_tokens: int, seconds: float) -> dict[str, Any]:
    """The final ``done: true`` record of a streamed reply."""
    record = ollama_chat(model, "", prompt_tokens, seconds)
    record["eval_count"] = max(1, len(text) // 4)
    return record


def ollama_tags(models: list[str]) -> dict[str, Any]:
    """``GET /api/tags``."""
    return {
        "models": [
            {
                "name": m,
                "model": m,
                "modified_at": _now_iso(),
                "size": 1,
                "digest": hashlib.sha256(m.encode()).hexdigest(),
                "details": {"format": "gguf", "family": "fault", "parameter_size": "0B", "quantization_level": "Q0"},
            }
            for m in models
        ]
    }


def _vector(text: str, dims: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 128) / 128 for b in digest[:dims]]


def ollama_embed(model: str, inputs: str | list[str]) -> dict[str, Any]:
    """``POST /api/embed``: a deterministic vector per input."""
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    return {
        "model": model,
        "embeddings": [_vector(t) for t in texts],
        "total_duration": 1000,
        "load_duration": 0,
        "prompt_eval_count": sum(max(1, len(t) // 4) for t in texts),
    }


def ollama_error(message: str) -> dict[str, Any]:
    """Ollama's error body (also sent as a record inside a 200 stream)."""
    return {"error": message}


def openai_chat(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    """A complete ``/v1/chat/completions`` reply."""
    completion = max(1, len(text) // 4)
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
    }


def openai_chunk(model: str, piece: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` event."""
    delta = {"role": "assistant", "content": piece} if piece is not None else {}
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def openai_usage_chunk(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    """The usage-only chunk sent when ``stream_options.include_usage`` is set."""
    chunk = openai_chunk(model, None)
    chunk["choices"] = []
    completion = max(1, len(text) // 4)
    chunk["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
    return chunk


def openai_models(models: list[str]) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fault-server"} for m in models],
    }


def openai_error(message: str, *, status: int) -> dict[str, Any]:
    """OpenAI's error body."""
    kind = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}
    code = "model_not_found" if status == 404 else None
    return {"error": {"message": message, "type": kind.get(status, "server_error"), "param": None, "code": code}}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
