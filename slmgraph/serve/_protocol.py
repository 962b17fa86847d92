"""What both wire protocols share: the parsed chat call, request-level refusals,
the text of the last user message, and chunking a streamed answer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._host import Failure

__all__ = ["ChatCall", "Refused", "last_user_text", "model_of", "flag", "conversation_of", "pieces", "result_headers",
           "parse_json", "safe_id", "SAFE_ID"]

#: What an id from a client (conversation id, idempotency key) may hold: it becomes
#: part of a thread id and goes back out in response headers.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def parse_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A request body as a JSON object, checked before anything reads it.

    Raises:
        Refused: 400 for bytes that are not UTF-8 JSON, nesting deeper than
            ``max_depth``, a lone surrogate (``"\\ud800"``) in any string, or a
            body that is not an object.
    """
    try:
        body = json.loads(raw)
    except RecursionError:
        raise Refused(400, "invalid_json", f"the request body is nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "invalid_json", "the request body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_request", "the request body must be a JSON object")
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:  # iterative: a deep body cannot exhaust the interpreter's stack here
        value, depth = stack.pop()
        if depth > max_depth:
            raise Refused(400, "invalid_json", f"the request body is nested deeper than {max_depth} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str) and _SURROGATE.search(text):
                    raise Refused(400, "invalid_json", "the request body holds a lone UTF-16 surrogate "
                                  "(an unpaired \\ud800-\\udfff escape); send valid Unicode text")
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return body


def safe_id(value: Any, what: str, max_len: int) -> str:
    """``value`` when it is a string of :data:`SAFE_ID` characters of at most ``max_len``.

    Raises:
        Refused: 400, naming ``what`` and the allowed characters.
    """
    if not isinstance(value, str) or len(value) > max_len or not SAFE_ID.fullmatch(value):
        raise Refused(400, "invalid_request", f"{what} must be 1 to {max_len} characters of A-Z, a-z, 0-9 and "
                      "._:@+=- (starting with a letter or digit)")
    return value


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
    return safe_id(cid, "a conversation id", max_len)


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
