"""Ollama backend: a :class:`~slmgraph.models._base.Model` over the official ``ollama`` client.

The client is created lazily and bound to the event loop that first uses it; when a
later call runs on a different loop (each sync wrapper call starts a fresh one with
``asyncio.run``) a new client is made, because an httpx connection pool cannot be
shared between loops. Client and transport failures are translated into the
slmgraph error tree; no retries happen here.

Timeouts (the ``ollama`` client has none by default): ``connect_timeout`` for the TCP
connect, ``timeout`` for a whole non-streamed call and for the first streamed record,
``idle_timeout`` for each gap between streamed records. A stream that times out or
breaks off raises; its partial text is never returned as a reply.

This module is the connection (client, timeouts, error translation); the request
body and the decoding of replies are in :mod:`._ollama_wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .._env import check_ollama_host

if TYPE_CHECKING:  # the SDK loads on the first call, not on import
    import ollama


def _sdk() -> Any:
    """The ``ollama`` module, imported on first use; it builds a client from
    ``OLLAMA_HOST`` when imported, so a malformed value is a ConfigError naming it."""
    check_ollama_host()
    import ollama

    return ollama

from .._errors import (
    IncompleteStreamError,
    MalformedResponseError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from ._base import Message, Model, ModelReply, ModelSettings, StreamChunk, TokenLogprob
from ._ollama_wire import PROVIDER, chat_options, chat_request, to_reply, token_logprobs

__all__ = ["OllamaModel", "DEFAULT_OLLAMA_HOST"]

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_NOT_FOUND = re.compile(r"model\b.*\bnot found", re.IGNORECASE | re.DOTALL)
# The ollama client drops response headers from its errors; an httpx response hook
# stores Retry-After here, in the context of the task making the call.
_RETRY_AFTER: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("retry_after", default=None)


async def _record_retry_after(response: httpx.Response) -> None:
    box = _RETRY_AFTER.get()
    value = response.headers.get("retry-after")
    if box is not None and value is not None and response.status_code >= 400:
        with contextlib.suppress(ValueError):
            box["retry_after"] = float(value)


class OllamaModel(Model):
    """A model served by a local (or remote) Ollama server.

    Args:
        name: the Ollama model tag, e.g. ``"qwen2.5:0.5b"``.
        host: server address; defaults to ``$OLLAMA_HOST``, then ``http://127.0.0.1:11434``.
        num_ctx: context window to request (Ollama's ``num_ctx`` option); also
            reported as :attr:`context_window`.
        keep_alive: how long Ollama keeps the model loaded after a call (``"5m"``,
            seconds as a number, ``0`` to unload at once); ``None`` leaves the
            server default.
        timeout: seconds for a whole non-streamed call, and to the first record of
            a streamed one.
        connect_timeout: seconds to open the TCP connection.
        idle_timeout: longest gap between two streamed records; defaults to ``timeout``.
        options: extra Ollama options (``top_k``, ``repeat_penalty``, ...) sent with
            every call; per-call :class:`ModelSettings` win over these.

    Example:
        >>> model = OllamaModel("qwen2.5:0.5b")
        >>> reply = model.complete_sync([Message("user", "Say hi")])  # doctest: +SKIP
    """

    provider = PROVIDER

    def __init__(
        self,
        name: str,
        *,
        host: str | None = None,
        num_ctx: int = 4096,
        keep_alive: str | float | None = "5m",
        timeout: float = 60.0,
        options: dict[str, Any] | None = None,
        connect_timeout: float = 2.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST
        self.num_ctx = num_ctx
        self.context_window = num_ctx
        self.keep_alive = keep_alive
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = timeout if idle_timeout is None else idle_timeout
        self.options = dict(options or {})
        self._client: ollama.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.host,)

    # ------------------------------------------------------------------ client

    def _get_client(self) -> ollama.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            ollama = _sdk()

            # A client made on another (probably closed) loop is dropped, not closed:
            # closing it would need that loop.
            self._client = ollama.AsyncClient(
                host=self.host,
                timeout=httpx.Timeout(max(self.timeout, self.idle_timeout), connect=self.connect_timeout),
                event_hooks={"response": [_record_retry_after]},
            )
            self._client_loop = loop
        return self._client

    async def aprepare(self) -> None:
        """Import the ``ollama`` library and make this loop's client; sends nothing."""
        self._get_client()

    async def aclose(self) -> None:
        """Close the HTTP connections. Safe to call more than once."""
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    # ---------------------------------------------------------------- requests

    def _chat_kwargs(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any] | None,
        settings: ModelSettings | None,
        stream: bool,
    ) -> dict[str, Any]:
        return chat_request(
            self.name,
            messages,
            schema,
            settings,
            options=chat_options(self.num_ctx, self.options, settings),
            keep_alive=self.keep_alive,
            stream=stream,
        )

    @contextlib.contextmanager
    def _translated(self, *, model_call: bool = True) -> Iterator[None]:
        """Turn ollama/httpx failures raised inside the block into slmgraph errors."""
        ollama = _sdk()

        who = dict(model=self.name, provider=PROVIDER)
        box: dict[str, float] = {}
        token = _RETRY_AFTER.set(box)
        try:
            yield
        except ollama.ResponseError as exc:
            status, text = exc.status_code, str(exc.error)
            if model_call and (status == 404 or _NOT_FOUND.search(text)):
                raise ModelNotFoundError(
                    f"Ollama at {self.host} does not have model {self.name!r} ({text}); "
                    f"download it with `ollama pull {self.name}`",
                    **who,
                ) from None
            if status < 0:  # an {"error": ...} record inside a 200 stream
                raise ModelError(f"Ollama at {self.host} reported an error: {text}", **who) from None
            if status in (429, 503):
                raise ModelOverloadedError(
                    f"Ollama at {self.host} is busy (HTTP {status}: {text}); the call is retried"
                    + (f" after {box['retry_after']:g} s" if "retry_after" in box else "")
                    + ". Lower max_parallel, or raise OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the server",
                    status_code=status,
                    retry_after=box.get("retry_after"),
                    **who,
                ) from None
            raise ModelHTTPError(
                f"Ollama at {self.host} answered HTTP {status}: {text}",
                status_code=status,
                **who,
            ) from None
        except httpx.ConnectTimeout:
            raise ModelTimeoutError(
                f"could not connect to Ollama at {self.host} within connect_timeout="
                f"{self.connect_timeout:g} s; check that the host is up and reachable",
                **who,
            ) from None
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(
                f"Ollama at {self.host} did not answer within the {self.timeout} s timeout "
                f"({type(exc).__name__}); raise `timeout=` (the first call also loads the "
                "model) or use a smaller model",
                **who,
            ) from None
        except (httpx.ConnectError, ConnectionError):
            raise ModelUnavailableError(
                f"cannot connect to Ollama at {self.host}; start it with `ollama serve`, "
                "or set OLLAMA_HOST (or host=) to where it runs",
                **who,
            ) from None
        except httpx.TransportError as exc:
            raise ModelUnavailableError(
                f"the connection to Ollama at {self.host} failed mid-call "
                f"({type(exc).__name__}: {exc}); check that the server is still running",
                **who,
            ) from None
        except (ValueError, TypeError, AttributeError) as exc:
            # json.JSONDecodeError and pydantic.ValidationError are ValueErrors; the
            # client raises TypeError/AttributeError on JSON that is not an object.
            raise MalformedResponseError(
                f"Ollama at {self.host} sent a malformed reply ({type(exc).__name__}: "
                f"{str(exc)[:200]}); check that {self.host} is an Ollama server",
                **who,
            ) from None
        finally:
            _RETRY_AFTER.reset(token)

    def _timeout_error(self, what: str, seconds: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"Ollama at {self.host} {what} within {seconds:g} s; raise the timeout (the "
            "first call also loads the model) or use a smaller model",
            model=self.name,
            provider=PROVIDER,
        )

    # -------------------------------------------------------------- Model API

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """Run one chat call on ``/api/chat``.

        Args:
            messages: the conversation.
            schema: a JSON schema; Ollama constrains the reply to it and
                ``reply.parsed`` holds the decoded value.
            settings: per-call generation settings.

        Returns:
            The reply with usage, timings (seconds), finish reason and, when asked
            for, per-token logprobs.

        Raises:
            ModelUnavailableError: the server cannot be reached.
            ModelTimeoutError: no answer within ``timeout``.
            ModelNotFoundError: the server lacks the model.
            ModelOverloadedError: HTTP 429/503, with the server's ``Retry-After``.
            MalformedResponseError: a 200 whose body is not Ollama's JSON.
            ModelHTTPError: any other HTTP error.
        """
        kwargs = self._chat_kwargs(messages, schema, settings, stream=False)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                with self._translated():
                    resp = await self._get_client().chat(**kwargs)
        except TimeoutError:
            raise self._timeout_error("did not answer", self.timeout) from None
        return to_reply(
            resp.message.content or "", resp, model=self.name, logprobs=token_logprobs(resp.logprobs),
            schema=schema, latency_s=time.perf_counter() - started,
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream a chat reply from ``/api/chat``.

        Yields one chunk per NDJSON record with content, then a last chunk (whose
        ``delta`` is the ``done`` record's content, usually empty) carrying the
        complete :class:`ModelReply`.

        Raises:
            ModelUnavailableError: the server cannot be reached, or the stream ended
                without its ``done`` record (a transient fault; retry the call).
            Also the errors listed on :meth:`complete`.
        """
        kwargs = self._chat_kwargs(messages, schema, settings, stream=True)
        started = time.perf_counter()
        pieces: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        loop = asyncio.get_running_loop()
        deadline, what = loop.time() + self.timeout, ("sent no first token", self.timeout)
        with self._translated():
            records = await self._get_client().chat(**kwargs)
        async with contextlib.aclosing(records):
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        with self._translated():
                            part = await anext(records, None)
                except TimeoutError:
                    raise self._timeout_error(*what) from None
                deadline, what = loop.time() + self.idle_timeout, ("stalled mid-stream", self.idle_timeout)
                if part is None:
                    break
                delta = part.message.content or ""
                pieces.append(delta)
                if part.logprobs is not None:
                    logprobs = (logprobs or []) + list(token_logprobs(part.logprobs) or ())
                if part.done:
                    yield StreamChunk(
                        delta=delta,
                        reply=to_reply("".join(pieces), part, model=self.name, logprobs=logprobs, schema=schema,
                                       latency_s=time.perf_counter() - started),
                    )
                    return
                if delta:
                    yield StreamChunk(delta=delta)
        raise IncompleteStreamError(
            f"the stream from Ollama at {self.host} ended without its final `done` record "
            "(the reply is truncated and was discarded); retry the call, and check the "
            "server log if it recurs",
            model=self.name,
            provider=PROVIDER,
        )

    async def list_models(self) -> list[str]:
        """Names of the models the server has (``GET /api/tags``)."""
        with self._translated(model_call=False):
            resp = await self._get_client().list()
        return [m.model for m in resp.models if m.model]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` with this model (``POST /api/embed``), one vector per text."""
        if not texts:
            return []
        with self._translated():
            resp = await self._get_client().embed(
                model=self.name,
                input=list(texts),
                options=chat_options(self.num_ctx, self.options, None),
                keep_alive=self.keep_alive,
            )
        return [list(vector) for vector in resp.embeddings]

    def __repr__(self) -> str:
        return f"OllamaModel(name={self.name!r}, host={self.host!r})"

