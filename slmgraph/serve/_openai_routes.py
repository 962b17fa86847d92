"""The OpenAI chat-completions wire format: ``/v1/models``, ``/v1/chat/completions``.

Streaming is Server-Sent Events: a role chunk first, an SSE comment
(``: slmgraph node router``) as each graph node finishes (SSE clients skip
comments), then, in one write once the run ends, the answer in content chunks, a
closing chunk with ``finish_reason`` and the ``slmgraph`` extension field, and
``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import JSONResponse

from ..graphs._graph import NodeEvent
from ..graphs._state import RunResult
from ._config import ServeConfig
from ._host import Failure, content_of, extension, failure_of
from ._protocol import ChatCall, Refused, conversation_of, flag, last_user_text, model_of, pieces, result_headers

__all__ = ["OpenAIProtocol"]


def _usage(result: RunResult) -> dict[str, int]:
    t = result.totals
    return {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens,
            "total_tokens": t.prompt_tokens + t.completion_tokens}


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class OpenAIProtocol:
    """Parses OpenAI chat requests and shapes replies, streams and errors."""

    name = "openai"

    def error_body(self, f: Failure) -> dict[str, Any]:
        kind = "server_error" if f.status >= 500 else "authentication_error" if f.status == 401 else "invalid_request_error"
        return {"error": {"message": f.message, "type": kind, "param": None, "code": f.code}}

    def error(self, f: Failure, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.error_body(f), status_code=f.status, headers=dict(headers or {}))

    def parse(self, body: Mapping[str, Any], headers: Mapping[str, str], cfg: ServeConfig) -> ChatCall:
        model = model_of(body)
        if body.get("n") not in (None, 1):
            raise Refused(400, "unsupported_parameter", "only n=1 is supported: a graph gives one answer")
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return ChatCall(
            model=model,
            text=last_user_text(body),
            stream=flag(body, "stream", False),
            conversation_id=conversation_of(body, headers, cfg.conversation_id_max),
            include_usage=include_usage,
        )

    def models(self, names: list[str], created: int) -> dict[str, Any]:
        return {"object": "list", "data": [self.model(n, created) for n in names]}

    def model(self, name: str, created: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "slmgraph"}

    def reply(self, name: str, result: RunResult, conversation_id: str, started: float) -> JSONResponse:
        ext = extension(result, conversation_id)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content_of(result)},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": _usage(result),
            "slmgraph": ext,
        }  # fmt: skip
        return JSONResponse(body, headers=result_headers(ext) | {"X-Conversation-Id": conversation_id})

    async def stream(
        self, call: ChatCall, name: str, events: AsyncIterator[NodeEvent], conversation_id: str, cfg: ServeConfig,
    ) -> AsyncIterator[str]:
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                         "choices": [choice], **extra})

        yield chunk({"role": "assistant", "content": ""})
        result: RunResult | None = None
        try:
            async with contextlib.aclosing(events) as running:
                async for event in running:
                    if event.result is not None:
                        result = event.result
                    else:
                        yield f": slmgraph node {event.node}\n\n"
        except Exception as exc:  # noqa: BLE001 - reported in the stream: the status is already sent
            yield _sse(self.error_body(failure_of(exc)))
            yield "data: [DONE]\n\n"
            return
        assert result is not None
        # The answer exists whole once the run ends: its chunks go out in one write.
        tail = [chunk({"content": piece}) for piece in pieces(content_of(result), cfg.stream_chunk_chars)]
        ext = extension(result, conversation_id)
        if call.include_usage:
            tail.append(chunk({}, "stop", slmgraph=ext))
            tail.append(_sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                              "choices": [], "usage": _usage(result)}))
        else:
            tail.append(chunk({}, "stop", slmgraph=ext, usage=_usage(result)))
        tail.append("data: [DONE]\n\n")
        yield "".join(tail)
