"""What both wire protocols share: the parsed chat call, request-level refusals,
the text of the last user message, and chunking a streamed answer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._host import Failure

__all__ = ["ChatCall", "Refused", "last_user_text", "model_of", "flag", "conversation_of", "pieces", "result_headers"]


class Refused(Exception):
    """A request turned away before any run started (bad JSON, no key, too big...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.failure = Failure(status, code, message)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A chat request, whichever protocol it came in."""

    model: str
    text: str
    stream: bool
    conversation_id: str | None = None
    include_usage: bool = False


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts; only text is read
        parts = []
        for part in content:
            if not isinstance(part, Mapping):
                raise Refused(400, "invalid_request", f"{where}: each content part must be an object")
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise Refused(400, "invalid_request", f"{where}: a text part needs a string `text`")
                parts.append(part["text"])
        return "\n".join(parts)
    raise Refused(400, "invalid_request", f"{where}.content must be a string or a list of content parts")


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message: the request the graph works on.

    Raises:
        Refused: ``messages`` is missing or malformed, or has no user message.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refused(400, "invalid_request", "`messages` must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise Refused(400, "invalid_request", f"messages[{i}] must be an object with a string `role`")
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return _text(messages[i].get("content"), f"messages[{i}]")
    raise Refused(400, "invalid_request", "`messages` has no message with role 'user'")


def model_of(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refused(400, "invalid_request", "`model` is required: the name of a served graph")
    return model


def flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Refused(400, "invalid_request", f"`{key}` must be true or false")
    return value


def conversation_of(body: Mapping[str, Any], headers: Mapping[str, str], max_len: int) -> str | None:
    """The conversation id from the ``X-Conversation-Id`` header or the body's
    ``conversation_id`` field (the header wins)."""
    cid: Any = headers.get("x-conversation-id") or body.get("conversation_id")
    if cid is None or cid == "":
        return None
    if not isinstance(cid, str) or len(cid) > max_len or not cid.isprintable():
        raise Refused(400, "invalid_request", f"a conversation id must be printable text of at most {max_len} characters")
    return cid


def pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` characters."""
    for i in range(0, len(text), size):
        yield text[i : i + size]


def result_headers(ext: Mapping[str, Any]) -> dict[str, str]:
    """``X-Slmgraph-*`` headers for a finished run (non-streaming responses)."""
    out = {
        "X-Slmgraph-Thread-Id": str(ext["thread_id"]),
        "X-Slmgraph-Status": str(ext["status"]),
        "X-Slmgraph-Route": str(ext["route"] or "none"),
        "X-Slmgraph-Cost-Usd": f"{ext['cost_usd']:.8f}",
    }
    if ext.get("escalation_reason"):
        out["X-Slmgraph-Escalation-Reason"] = str(ext["escalation_reason"])
    return {k: v.encode("latin-1", "replace").decode("latin-1") for k, v in out.items()}
