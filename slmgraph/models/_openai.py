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

This module is the connection (client, key, timeouts, what to drop when a server
refuses it); the body sent and the reply read are in :mod:`._openai_wire`, the
translation of the SDK's errors in :mod:`._openai_errors`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlparse

import httpx
import openai

from .._errors import ConfigError, InvalidModelOutputError, SlmGraphError
from ._base import Message, Model, ModelReply, ModelSettings, StreamChunk, Usage
from ._openai_errors import broken_stream, incomplete_stream, malformed, sdk_error, timed_out
from ._openai_wire import (
    PROVIDER,
    SchemaMode,
    StreamReader,
    chat_request,
    response_format,
    to_reply,
    token_logprobs,
    usage_of,
)

__all__ = ["OpenAIModel"]

_OPENAI_URL = "https://api.openai.com/v1"
#: Sent as the key to loopback servers, which usually ignore it.
_PLACEHOLDER_KEY = "slmgraph-local"


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

    provider = PROVIDER

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
        return chat_request(
            self.name, messages, schema, settings, schema_mode=self.schema_mode, logprobs=self._logprobs_ok
        )

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
                    kwargs["response_format"] = response_format(
                        kwargs["response_format"]["json_schema"]["schema"], self.schema_mode
                    )
                elif "stream_options" in kwargs and "stream_options" in said:
                    self._stream_usage = False
                    del kwargs["stream_options"]
                elif "logprobs" in kwargs and "logprob" in said.lower():
                    self._logprobs_ok = False
                    kwargs.pop("logprobs")
                    kwargs.pop("top_logprobs", None)
                else:
                    raise sdk_error(self, exc, kwargs) from exc
            except openai.OpenAIError as exc:
                raise sdk_error(self, exc, kwargs) from exc
            except ValueError as exc:  # a 200 whose body is not JSON
                raise malformed(self, exc) from None

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
            raise timed_out(self, "did not answer", self.timeout) from None
        latency = time.perf_counter() - started
        if not hasattr(response, "choices"):  # the SDK hands back non-JSON bodies as text
            raise malformed(self, response)
        if not response.choices:
            raise InvalidModelOutputError(
                f"{self.display_url} returned a completion with no choices",
                model=self.name,
                provider=self.provider,
            )
        choice = response.choices[0]
        return to_reply(
            choice.message.content or "",
            model=self.name,
            schema=schema,
            usage=Usage() if response.usage is None else usage_of(response.usage),
            latency_s=latency,
            logprobs=token_logprobs(choice.logprobs),
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
            raise timed_out(self, *what) from None
        chunks = aiter(response)
        read = StreamReader()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, None)
                except TimeoutError:
                    raise timed_out(self, *what) from None
                deadline, what = loop.time() + self.idle_timeout, ("stalled mid-stream", self.idle_timeout)
                if chunk is None:
                    break
                delta = read.feed(chunk)
                if delta:
                    yield StreamChunk(delta=delta)
        except openai.OpenAIError as exc:
            raise sdk_error(self, exc, kwargs) from exc
        except SlmGraphError:
            raise
        except ValueError as exc:  # an event whose data is not JSON
            raise malformed(self, exc) from None
        except Exception as exc:
            if not type(exc).__module__.startswith(("httpx", "httpcore")):
                raise
            raise broken_stream(self, exc) from exc
        finally:
            await response.close()
        if read.finish_reason is None:
            raise incomplete_stream(self)
        usage = read.usage
        if usage is None:
            prompt = sum(self.count_tokens(m.content) for m in messages)
            usage = Usage(prompt_tokens=prompt, completion_tokens=len(read.parts))
        reply = to_reply(
            "".join(read.parts),
            model=self.name,
            schema=schema,
            usage=usage,
            latency_s=time.perf_counter() - started,
            logprobs=read.logprobs,
            finish_reason=read.finish_reason,
        )
        yield StreamChunk(delta="", reply=reply)

    async def list_models(self) -> list[str]:
        """The model ids the server offers (``GET /v1/models``)."""
        try:
            return [m.id async for m in self._client().models.list()]
        except openai.OpenAIError as exc:
            raise sdk_error(self, exc, None) from exc

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
