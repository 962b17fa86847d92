"""The Ollama chat wire format: ``/api/tags``, ``/api/chat``.

``/api/chat`` streams by default (``"stream": false`` turns it off), as
newline-delimited JSON: a record with empty content and ``"slmgraph": {"node": ...}``
as each graph node finishes, the answer in content records, then a final record
with ``"done": true``, the token counts and the ``slmgraph`` extension field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from typing import Any

from starlette.responses import JSONResponse

from ..graphs._graph import NodeEvent
from ..graphs._state import RunResult
from ._config import ServeConfig
from ._host import Failure, content_of, extension, failure_of
from ._protocol import ChatCall, conversation_of, flag, last_user_text, model_of, pieces, result_headers

__all__ = ["OllamaProtocol"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


class OllamaProtocol:
    """Parses Ollama chat requests and shapes replies, streams and errors."""

    name = "ollama"

    def error_body(self, f: Failure) -> dict[str, Any]:
        return {"error": f.message}

    def error(self, f: Failure, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.error_body(f), status_code=f.status, headers=dict(headers or {}))

    def parse(self, body: Mapping[str, Any], headers: Mapping[str, str], cfg: ServeConfig) -> ChatCall:
        return ChatCall(
            model=model_of(body),
            text=last_user_text(body),
            stream=flag(body, "stream", True),
            conversation_id=conversation_of(body, headers, cfg.conversation_id_max),
        )

    def tags(self, names: list[str], modified: str) -> dict[str, Any]:
        models = []
        for n in names:
            models.append({
                "name": n,
                "model": n,
                "modified_at": modified,
                "size": 0,
                "digest": hashlib.sha256(n.encode()).hexdigest(),
                "details": {"parent_model": "", "format": "slmgraph", "family": "slmgraph",
                            "families": ["slmgraph"], "parameter_size": "", "quantization_level": ""},
            })  # fmt: skip
        return {"models": models}

    def _message(self, name: str, content: str, done: bool) -> dict[str, Any]:
        return {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": content}, "done": done}

    def _done(self, name: str, result: RunResult, started: float, conversation_id: str) -> dict[str, Any]:
        t = result.totals
        return {
            "done_reason": "stop",
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": t.prompt_tokens,
            "prompt_eval_duration": 0,
            "eval_count": t.completion_tokens,
            "eval_duration": int(t.latency_s * 1e9),
            "slmgraph": extension(result, conversation_id),
        }

    def reply(self, name: str, result: RunResult, conversation_id: str, started: float) -> JSONResponse:
        body = self._message(name, content_of(result), True) | self._done(name, result, started, conversation_id)
        headers = result_headers(body["slmgraph"]) | {"X-Conversation-Id": conversation_id}
        return JSONResponse(body, headers=headers)

    async def stream(
        self, call: ChatCall, name: str, events: AsyncIterator[NodeEvent], conversation_id: str, cfg: ServeConfig,
    ) -> AsyncIterator[str]:
        started = time.perf_counter()
        result: RunResult | None = None
        try:
            async with contextlib.aclosing(events) as running:
                async for event in running:
                    if event.result is not None:
                        result = event.result
                    else:
                        yield _line(self._message(name, "", False) | {"slmgraph": {"node": event.node}})
        except Exception as exc:  # noqa: BLE001 - reported in the stream: the status is already sent
            yield _line(self.error_body(failure_of(exc)))
            return
        assert result is not None
        # The answer exists whole once the run ends: its records go out in one write.
        tail = [_line(self._message(name, piece, False)) for piece in pieces(content_of(result), cfg.stream_chunk_chars)]
        tail.append(_line(self._message(name, "", True) | self._done(name, result, started, conversation_id)))
        yield "".join(tail)
