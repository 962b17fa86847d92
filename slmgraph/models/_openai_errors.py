"""The ``openai`` SDK's failures, translated into slmgraph errors that say what to do.

Each function takes the :class:`~slmgraph.OpenAIModel` that failed, for its name, URL
and timeout.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import openai

from .._errors import (
    IncompleteStreamError,
    MalformedResponseError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelTimeoutError,
    ModelUnavailableError,
    RequestTooLargeError,
    SlmGraphError,
)

if TYPE_CHECKING:
    from ._openai import OpenAIModel

__all__ = ["sdk_error", "malformed", "timed_out", "broken_stream", "incomplete_stream"]


def _who(model: OpenAIModel) -> dict[str, str]:
    return {"model": model.name, "provider": model.provider}


def malformed(model: OpenAIModel, detail: object) -> MalformedResponseError:
    """A 200 whose body is not a chat completion."""
    return MalformedResponseError(
        f"{model.display_url} answered 200 with a body that is not an OpenAI chat "
        f"completion ({str(detail)[:120]!r}); check that base_url points at the API, "
        "not at a proxy or web page",
        **_who(model),
    )


def timed_out(model: OpenAIModel, what: str, seconds: float) -> ModelTimeoutError:
    """slmgraph's own deadline passed (``what``: "did not answer", "stalled mid-stream", ...)."""
    return ModelTimeoutError(
        f"{model.name!r} at {model.display_url} {what} within {seconds:g} s; raise the "
        "timeout or send a shorter request",
        **_who(model),
    )


def broken_stream(model: OpenAIModel, exc: Exception) -> ModelUnavailableError:
    """The connection failed while a stream was being read."""
    return ModelUnavailableError(
        f"the stream from {model.display_url} broke off ({type(exc).__name__}: {exc}); "
        "the request can be retried",
        **_who(model),
    )


def incomplete_stream(model: OpenAIModel) -> IncompleteStreamError:
    """A stream that ended without a ``finish_reason``."""
    return IncompleteStreamError(
        f"the stream from {model.display_url} ended before the model finished "
        "(no finish_reason): the connection dropped or the server stopped; the "
        "partial reply was discarded and the request can be retried",
        **_who(model),
    )


def sdk_error(model: OpenAIModel, exc: openai.OpenAIError, kwargs: dict[str, Any] | None) -> SlmGraphError:
    """Translate an SDK error; ``kwargs`` is the request that failed (to count its tokens)."""
    where = model.display_url
    ctx = _who(model)
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeoutError(
            f"{model.name!r} at {where} did not answer within {model.timeout:g}s; "
            "raise timeout= or send a shorter request",
            **ctx,
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailableError(
            f"cannot reach the OpenAI-compatible server at {where} ({exc}); "
            "check that it is running and that base_url / OPENAI_BASE_URL is right",
            **ctx,
        )
    if isinstance(exc, openai.AuthenticationError):
        return ModelHTTPError(
            f"{where} refused the API key (HTTP 401); check OPENAI_API_KEY or api_key=",
            status_code=401,
            **ctx,
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelNotFoundError(
            f"{where} answered 404 for model {model.name!r}; check the model name "
            "(list_models() shows what the server has) and that base_url ends in /v1",
            **ctx,
        )
    if isinstance(exc, openai.APIStatusError):
        if getattr(exc, "code", None) == "context_length_exceeded":
            return _too_large(model, exc, kwargs)
        return _status_error(model, exc)
    return ModelError(f"the OpenAI client failed for {model.name!r} at {where}: {exc}", **ctx)


def _status_error(model: OpenAIModel, exc: openai.APIStatusError) -> ModelHTTPError:
    where, status = model.display_url, exc.status_code
    detail = str(exc.message)
    if len(detail) > 400:
        detail = detail[:400] + " ..."
    if status in (429, 503):
        return ModelOverloadedError(
            f"{where} is busy (HTTP {status}) for {model.name!r}: {detail}; the request can be retried",
            status_code=status,
            retry_after=_retry_after(exc),
            **_who(model),
        )
    # llama_cpp.server answers 500 to a request that fails validation.
    invalid = status == 500 and "validation error" in detail
    retry = status == 429 or (status >= 500 and not invalid)
    err = ModelHTTPError(
        f"{where} answered HTTP {status} for {model.name!r}: {detail}"
        + ("; the request can be retried" if retry else "; fix the request, a retry will fail the same way"),
        status_code=status,
        **_who(model),
    )
    err.transient = retry
    return err


def _too_large(model: OpenAIModel, exc: openai.APIStatusError, kwargs: dict[str, Any] | None) -> RequestTooLargeError:
    text = str(exc.message)
    limit = re.search(r"context length is (\d+)", text)
    tokens = re.search(r"\((\d+) in the messages", text) or re.search(r"requested (\d+) tokens", text)
    if tokens:
        n = int(tokens.group(1))
    else:
        n = sum(model.count_tokens(m["content"] or "") for m in (kwargs or {}).get("messages", []))
    return RequestTooLargeError(n, int(limit.group(1)) if limit else model.context_window, model.name)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return None if value is None else float(value)
    except (AttributeError, ValueError):
        return None
