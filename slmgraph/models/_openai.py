"""A backend for any OpenAI-compatible chat server, through the official ``openai`` SDK.

It serves OpenAI itself, and local servers that speak the same API
(``llama_cpp.server``, vLLM, llama.cpp's ``llama-server``, LM Studio, ...).

Servers disagree on structured output: OpenAI takes
``{"type": "json_schema", "json_schema": {...}}`` while ``llama_cpp.server`` only
takes ``{"type": "json_object", "schema": {...}}`` (it answers the first with HTTP 500).
With ``schema_mode="auto"`` the model sends the first form and, if the server
rejects it, switches to the second for the rest of its life.

Timeouts: ``connect_timeout`` for the TCP connect, ``timeout`` for a whole call and
for the first streamed chunk, ``idle_timeout`` for each gap between chunks. A stream
that breaks off or stalls raises; its partial text is never returned as a reply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal
from urllib.parse import urlparse

import httpx
import openai

from .._errors import (
    ConfigError,
    IncompleteStreamError,
    InvalidModelOutputError,
    MalformedResponseError,
    ModelOverloadedError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
    RequestTooLargeError,
    SlmGraphError,
)
from ._base import Message, Model, ModelReply, ModelSettings, StreamChunk, TokenLogprob, Usage, try_parse_json

__all__ = ["OpenAIModel"]

_OPENAI_URL = "https://api.openai.com/v1"
#: Sent as the key to loopback servers, which usually ignore it.
_PLACEHOLDER_KEY = "slmgraph-local"

SchemaMode = Literal["auto", "json_schema", "json_object"]


def _is_loopback(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        name: the model id the server knows (``"gpt-4o-mini"``, a llama.cpp alias, ...).
        base_url: the API root, ending in ``/v1``. Defaults to ``$OPENAI_BASE_URL``,
            then to OpenAI.
        api_key: defaults to ``$OPENAI_API_KEY``. Required unless ``base_url`` is a
            loopback address, where a placeholder is sent.
        timeout: seconds per call (to the first chunk when streaming). The SDK's own
            retries are off; this class does not retry either. Retries, a circuit
            breaker and the privacy gate come from :func:`~slmgraph.harden`, which
            ``build_graph`` and ``models_from_config`` apply; a bare instance used on
            its own gets none of them.
        connect_timeout: seconds to open the TCP connection.
        idle_timeout: longest gap between two streamed chunks; defaults to ``timeout``.
        context_window: tokens the model accepts.
        local: ``False`` marks even a loopback server remote; by default calls
            count as local exactly when ``base_url`` is a loopback address (see
            :attr:`Model.local`).
        schema_mode: how a JSON schema is sent (see the module docstring).

    Raises:
        ConfigError: no API key for a remote server.
    """

    provider = "openai"

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        context_window: int = 128_000,
        local: bool | None = None,
        schema_mode: SchemaMode = "auto",
        connect_timeout: float = 2.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        loopback = _is_loopback(self.base_url)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if not loopback:
                raise ConfigError(
                    "api_key",
                    f"no API key for {self.display_url}; set OPENAI_API_KEY or pass "
                    "api_key= (only loopback servers may go without one)",
                )
            key = _PLACEHOLDER_KEY
        self._api_key = key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = timeout if idle_timeout is None else idle_timeout
        self.context_window = context_window
        self.local = local
        self.schema_mode: SchemaMode = schema_mode
        self._stream_usage = True  # whether to send stream_options
        self._logprobs_ok = True  # False once the server has refused logprobs
        # One client per event loop: an HTTP client must not outlive or cross loops.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def display_url(self) -> str:
        """The API root calls go to."""
        return self.base_url or _OPENAI_URL

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.display_url,)

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed():
            client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=httpx.Timeout(max(self.timeout, self.idle_timeout), connect=self.connect_timeout),
                max_retries=0,
            )
            self._clients[loop] = client
        return client

    # -- requests ---------------------------------------------------------------------

    def _request(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, settings: ModelSettings
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.name, "messages": [m.to_dict() for m in messages]}
        for key in ("temperature", "max_tokens", "seed"):
            value = getattr(settings, key)
            if value is not None:
                kwargs[key] = value
        if settings.stop:
            kwargs["stop"] = list(settings.stop)
        if settings.logprobs and self._logprobs_ok:
            kwargs["logprobs"] = True
            # llama_cpp.server returns no logprobs at all without top_logprobs.
            kwargs["top_logprobs"] = settings.top_logprobs or 0
        if schema is not None:
            kwargs["response_format"] = self._response_format(schema)
        return kwargs

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_mode == "json_object":
            return {"type": "json_object", "schema": schema}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": _strict_ok(schema)},
        }

    async def _create(self, kwargs: dict[str, Any]) -> Any:
        """One ``chat.completions.create``, switching schema mode or dropping
        ``stream_options`` or ``logprobs`` once if the server rejects them (a skill
        without logprobs measures its confidence by sampling, or not at all).

        A rejection is a 400, 422 or 500 whose body names the field:
        ``llama_cpp.server`` answers 500 to ``{"type": "json_schema"}``.
        """
        client = self._client()
        while True:
            try:
                return await client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                said = f"{exc.message} {exc.body}" if exc.status_code in (400, 422, 500) else ""
                if self.schema_mode == "auto" and "response_format" in kwargs and "response_format" in said:
                    self.schema_mode = "json_object"
                    kwargs["response_format"] = self._response_format(
                        kwargs["response_format"]["json_schema"]["schema"]
                    )
                elif "stream_options" in kwargs and "stream_options" in said:
                    self._stream_usage = False
                    del kwargs["stream_options"]
                elif "logprobs" in kwargs and "logprob" in said.lower():
                    self._logprobs_ok = False
                    kwargs.pop("logprobs")
                    kwargs.pop("top_logprobs", None)
                else:
                    raise self._error(exc, kwargs) from exc
            except openai.OpenAIError as exc:
                raise self._error(exc, kwargs) from exc
            except ValueError as exc:  # a 200 whose body is not JSON
                raise self._malformed(exc) from None

    def _malformed(self, detail: object) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.display_url} answered 200 with a body that is not an OpenAI chat "
            f"completion ({str(detail)[:120]!r}); check that base_url points at the API, "
            "not at a proxy or web page",
            model=self.name,
            provider=self.provider,
        )

    def _timeout(self, what: str, seconds: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"{self.name!r} at {self.display_url} {what} within {seconds:g} s; raise the "
            "timeout or send a shorter request",
            model=self.name,
            provider=self.provider,
        )

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """One chat completion; see :meth:`Model.complete`."""
        kwargs = self._request(messages, schema, settings or ModelSettings())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._create(kwargs)
        except TimeoutError:
            raise self._timeout("did not answer", self.timeout) from None
        latency = time.perf_counter() - started
        if not hasattr(response, "choices"):  # the SDK hands back non-JSON bodies as text
            raise self._malformed(response)
        if not response.choices:
            raise InvalidModelOutputError(
                f"{self.display_url} returned a completion with no choices",
                model=self.name,
                provider=self.provider,
            )
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = Usage()
        if response.usage is not None:
            usage = Usage(response.usage.prompt_tokens or 0, response.usage.completion_tokens or 0)
        logprobs = None
        if choice.logprobs is not None and choice.logprobs.content:
            logprobs = tuple(_token_logprob(t) for t in choice.logprobs.content)
        return ModelReply(
            text=text,
            parsed=try_parse_json(text) if schema is not None else None,
            model=self.name,
            provider=self.provider,
            usage=usage,
            latency_s=latency,
            logprobs=logprobs,
            finish_reason=choice.finish_reason,
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream a reply: text deltas, then a last chunk carrying the full reply.

        Usage comes from the server when it honours ``stream_options.include_usage``;
        otherwise (``llama_cpp.server`` ignores it) the prompt is estimated with
        :meth:`count_tokens` and the completion counted one token per content delta.

        Raises:
            ModelUnavailableError: the stream ended before the model finished.
        """
        kwargs = self._request(messages, schema, settings or ModelSettings())
        kwargs["stream"] = True
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline, what = loop.time() + self.timeout, ("sent no first token", self.timeout)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._create(kwargs)
        except TimeoutError:
            raise self._timeout(*what) from None
        chunks = aiter(response)
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        deltas = 0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, None)
                except TimeoutError:
                    raise self._timeout(*what) from None
                deadline, what = loop.time() + self.idle_timeout, ("stalled mid-stream", self.idle_timeout)
                if chunk is None:
                    break
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.logprobs is not None and choice.logprobs.content:
                    logprobs.extend(_token_logprob(t) for t in choice.logprobs.content)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
                delta = choice.delta.content if choice.delta is not None else None
                if delta:
                    deltas += 1
                    parts.append(delta)
                    yield StreamChunk(delta=delta)
        except openai.OpenAIError as exc:
            raise self._error(exc, kwargs) from exc
        except SlmGraphError:
            raise
        except ValueError as exc:  # an event whose data is not JSON
            raise self._malformed(exc) from None
        except Exception as exc:
            if not type(exc).__module__.startswith(("httpx", "httpcore")):
                raise
            raise ModelUnavailableError(
                f"the stream from {self.display_url} broke off ({type(exc).__name__}: {exc}); "
                "the request can be retried",
                model=self.name,
                provider=self.provider,
            ) from exc
        finally:
            await response.close()
        if finish_reason is None:
            raise IncompleteStreamError(
                f"the stream from {self.display_url} ended before the model finished "
                "(no finish_reason): the connection dropped or the server stopped; the "
                "partial reply was discarded and the request can be retried",
                model=self.name,
                provider=self.provider,
            )
        text = "".join(parts)
        if usage is None:
            prompt = sum(self.count_tokens(m.content) for m in messages)
            usage = Usage(prompt_tokens=prompt, completion_tokens=deltas)
        reply = ModelReply(
            text=text,
            parsed=try_parse_json(text) if schema is not None else None,
            model=self.name,
            provider=self.provider,
            usage=usage,
            latency_s=time.perf_counter() - started,
            logprobs=tuple(logprobs) or None,
            finish_reason=finish_reason,
        )
        yield StreamChunk(delta="", reply=reply)

    async def list_models(self) -> list[str]:
        """The model ids the server offers (``GET /v1/models``)."""
        try:
            return [m.id async for m in self._client().models.list()]
        except openai.OpenAIError as exc:
            raise self._error(exc, None) from exc

    async def aprepare(self) -> None:
        """Make this loop's client (its SSL context is most of a first call's set-up); sends nothing."""
        self._client()

    async def aclose(self) -> None:
        """Close this event loop's HTTP client, and forget clients of other loops."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - aclose is async
            loop = None
        client = self._clients.pop(loop, None) if loop is not None else None
        self._clients.clear()
        if client is not None:
            await client.close()

    # -- errors -----------------------------------------------------------------------

    def _error(self, exc: openai.OpenAIError, kwargs: dict[str, Any] | None) -> SlmGraphError:
        """Translate an SDK error into the slmgraph error that says what to do."""
        where = self.display_url
        ctx = {"model": self.name, "provider": self.provider}
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeoutError(
                f"{self.name!r} at {where} did not answer within {self.timeout:g}s; "
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
                f"{where} answered 404 for model {self.name!r}; check the model name "
                "(list_models() shows what the server has) and that base_url ends in /v1",
                **ctx,
            )
        if isinstance(exc, openai.APIStatusError):
            if _is_context_error(exc):
                return self._too_large(exc, kwargs)
            detail = str(exc.message)
            if len(detail) > 400:
                detail = detail[:400] + " ..."
            # llama_cpp.server answers 500 to a request that fails validation.
            invalid = exc.status_code == 500 and "validation error" in detail
            retry = exc.status_code == 429 or (exc.status_code >= 500 and not invalid)
            if exc.status_code in (429, 503):
                return ModelOverloadedError(
                    f"{where} is busy (HTTP {exc.status_code}) for {self.name!r}: {detail}; "
                    "the request can be retried",
                    status_code=exc.status_code,
                    retry_after=_retry_after(exc),
                    **ctx,
                )
            err = ModelHTTPError(
                f"{where} answered HTTP {exc.status_code} for {self.name!r}: {detail}"
                + ("; the request can be retried" if retry else "; fix the request, a retry will fail the same way"),
                status_code=exc.status_code,
                **ctx,
            )
            err.transient = retry
            return err
        return ModelError(f"the OpenAI client failed for {self.name!r} at {where}: {exc}", **ctx)

    def _too_large(self, exc: openai.APIStatusError, kwargs: dict[str, Any] | None) -> RequestTooLargeError:
        text = str(exc.message)
        limit = re.search(r"context length is (\d+)", text)
        tokens = re.search(r"\((\d+) in the messages", text) or re.search(r"requested (\d+) tokens", text)
        if tokens:
            n = int(tokens.group(1))
        else:
            n = sum(self.count_tokens(m["content"] or "") for m in (kwargs or {}).get("messages", []))
        return RequestTooLargeError(n, int(limit.group(1)) if limit else self.context_window, self.name)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return None if value is None else float(value)
    except (AttributeError, ValueError):
        return None


def _is_context_error(exc: openai.OpenAIError) -> bool:
    return isinstance(exc, openai.APIStatusError) and (
        getattr(exc, "code", None) == "context_length_exceeded"
    )


def _token_logprob(item: Any) -> TokenLogprob:
    top = tuple((alt.token, alt.logprob) for alt in (item.top_logprobs or ()))
    return TokenLogprob(token=item.token, logprob=item.logprob, top=top)


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
