"""The ASGI app: OpenAI and Ollama chat routes over served graphs, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import Send

from .._errors import ConfigError
from .._watchdog import LoopWatchdog
from ..graphs._graph import NodeEvent, SLMGraph
from ..graphs._state import RunResult
from ._config import ServeConfig, check_bind
from ._guard import BrowserGuard
from ._host import Failure, GraphHost, Ticket, UnknownModel, failure_of, is_storage_fault
from ._metrics import CONTENT_TYPE, Metrics
from ._ollama_routes import OllamaProtocol
from ._openai_routes import OpenAIProtocol
from ._protocol import ChatCall, Refused, parse_json

__all__ = ["create_app"]

log = logging.getLogger("slmgraph.serve")


class _Wire(Protocol):
    name: str

    def error(self, f: Failure, headers: Mapping[str, str] | None = None) -> Response: ...
    def parse(self, body: Mapping[str, Any], headers: Mapping[str, str], cfg: ServeConfig) -> ChatCall: ...
    def reply(self, name: str, result: RunResult, conversation_id: str, started: float) -> Response: ...
    def stream(self, call: ChatCall, name: str, events: AsyncIterator[NodeEvent], conversation_id: str,
               cfg: ServeConfig) -> AsyncIterator[str]: ...  # fmt: skip


class _ClientGone(Exception):
    pass


class _RunStream(StreamingResponse):
    """A streaming response that always closes its iterator, so a client that
    disconnects between two chunks still cancels its run at once, and gives back
    the request's admission ticket even if the stream never started."""

    def __init__(self, *args: Any, ticket: Ticket, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ticket = ticket

    async def __call__(self, scope: Any, receive: Any, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]
            self.ticket.release()


async def _until_disconnect(request: Request, work: Awaitable[RunResult]) -> RunResult:
    """Await ``work`` unless the client disconnects first; then cancel it."""
    run = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({run, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not run.done():
            run.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([run])
    if run.cancelled():
        raise _ClientGone()
    return run.result()


def _graphs(graphs: SLMGraph | Mapping[str, SLMGraph] | Sequence[SLMGraph]) -> dict[str, SLMGraph]:
    if isinstance(graphs, SLMGraph):
        return {graphs.name: graphs}
    if isinstance(graphs, Mapping):
        return dict(graphs)
    out: dict[str, SLMGraph] = {}
    for g in graphs:
        if g.name in out:
            raise ConfigError("graphs", f"two served graphs are named {g.name!r}; pass a mapping of names")
        out[g.name] = g
    return out


class _Server:
    def __init__(self, graphs: dict[str, SLMGraph], cfg: ServeConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.host = GraphHost(
            graphs, max_concurrency=cfg.max_concurrency, max_queue=cfg.max_queue, max_starting=cfg.max_starting
        )
        self.openai = OpenAIProtocol()
        self.ollama = OllamaProtocol()
        self.created = int(time.time())
        self.modified = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        self.tenants = {k: "k" + hashlib.sha256(b"slmgraph-tenant\0" + k.encode()).hexdigest()[:16] for k in cfg.api_keys}
        limiter = self.host.limiter
        metrics.gauges["slmgraph_runs_in_progress"] = ("Graph runs holding a slot.", lambda: limiter.active)
        metrics.gauges["slmgraph_runs_queued"] = ("Requests waiting for a run slot.", lambda: limiter.waiting)
        self.watchdog = LoopWatchdog(interval_s=0.05)
        metrics.gauges["slmgraph_event_loop_stall_max_seconds"] = (
            "Longest delay of the event loop seen since start.", lambda: round(self.watchdog.longest_stall_s, 4))
        metrics.gauges["slmgraph_event_loop_stall_recent_seconds"] = (
            "Longest delay of the event loop in the last 10 s.", lambda: round(self.watchdog.recent_stall_s(), 4))
        metrics.gauges["slmgraph_event_loop_own_stall_recent_seconds"] = (
            "Longest delay of the event loop in the last 10 s, less its wait for a CPU.",
            lambda: round(self.watchdog.recent_stall_s(own=True), 4))

    # -- guards ---------------------------------------------------------------

    def authorize(self, request: Request) -> str | None:
        """The caller's tenant: ``None`` without keys (loopback), else an id derived
        from the key (a hash prefix; the key itself is never stored or shown)."""
        if not self.cfg.api_keys:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip().encode()
        for key in self.cfg.api_keys:
            if scheme.lower() == "bearer" and hmac.compare_digest(token, key.encode()):
                return self.tenants[key]
        raise Refused(401, "invalid_api_key", "missing or wrong API key; send `Authorization: Bearer KEY`")

    async def body(self, request: Request) -> dict[str, Any]:
        limit = self.cfg.max_body_bytes
        too_big = Refused(413, "request_too_large", f"the request body is larger than {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        raw = bytearray()
        try:
            async with asyncio.timeout(self.cfg.body_timeout):
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > limit:
                        raise too_big
        except TimeoutError:
            raise Refused(408, "request_timeout",
                          f"the request body did not arrive within {self.cfg.body_timeout:g}s") from None
        return parse_json(bytes(raw), self.cfg.max_json_depth)

    @staticmethod
    def idempotency_key(request: Request, name: str, tenant: str | None) -> str | None:
        """The request's ``Idempotency-Key``, scoped to the graph and the caller's
        tenant (its API key), so two callers' keys never meet."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        if not 0 < len(key) <= 255 or not key.isascii() or not key.isprintable():
            raise Refused(400, "invalid_request", "an Idempotency-Key must be 1 to 255 printable ASCII characters")
        return f"{name}/{tenant or '-'}/{key}"

    def failure(self, exc: BaseException) -> Failure:
        if isinstance(exc, Refused):
            return exc.failure
        if isinstance(exc, ClientDisconnect):
            return Failure(499, "client_disconnected", "the client went away while sending its request")
        return failure_of(exc)

    def _auth_headers(self, f: Failure) -> dict[str, str]:
        """Headers an error response carries: the auth scheme on 401, a retry hint on
        503 (busy or storage), and a closed connection after a body timeout."""
        if f.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if f.status == 503:
            return {"Retry-After": "1"}
        if f.status == 408:
            return {"Connection": "close"}
        return {}

    # -- routes ---------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        problem = await self.host.probe()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem, "models": self.host.names()},
                                status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "models": self.host.names()})

    async def metrics_text(self, request: Request) -> Response:
        try:
            self.authorize(request)
        except Refused as exc:
            return PlainTextResponse(exc.failure.message, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return PlainTextResponse(self.metrics.render(), media_type=CONTENT_TYPE)

    async def _listing(self, request: Request, wire: _Wire, build: Callable[[], dict[str, Any]]) -> Response:
        try:
            self.authorize(request)
            return JSONResponse(build())
        except Refused as exc:
            return wire.error(exc.failure, self._auth_headers(exc.failure))

    async def v1_models(self, request: Request) -> Response:
        return await self._listing(request, self.openai, lambda: self.openai.models(self.host.names(), self.created))

    async def v1_model(self, request: Request) -> Response:
        def one() -> dict[str, Any]:
            try:
                return self.openai.model(self.host.resolve(request.path_params["model"]), self.created)
            except UnknownModel as exc:
                raise Refused(404, "model_not_found", str(exc)) from None

        return await self._listing(request, self.openai, one)

    async def api_tags(self, request: Request) -> Response:
        return await self._listing(request, self.ollama, lambda: self.ollama.tags(self.host.names(), self.modified))

    async def v1_chat(self, request: Request) -> Response:
        return await self.chat(request, self.openai)

    async def api_chat(self, request: Request) -> Response:
        return await self.chat(request, self.ollama)

    async def chat(self, request: Request, wire: _Wire) -> Response:
        started = time.perf_counter()
        label = "-"
        try:
            tenant = self.authorize(request)
            call = wire.parse(await self.body(request), request.headers, self.cfg)
            name = label = self.host.resolve(call.model)
            self.host.graph(name).validate_request(call.text)
            idempotency_key = self.idempotency_key(request, name, tenant)
            ticket = self.host.limiter.admit()
        except Exception as exc:  # noqa: BLE001 - every refusal gets the protocol's error shape
            f = self.failure(exc)
            self.metrics.observe_request(wire.name, label, f.status, time.perf_counter() - started)
            return wire.error(f, self._auth_headers(f))
        handed = False  # to a streaming response, which gives the ticket back itself
        try:
            conversation_id = call.conversation_id or secrets.token_hex(16)
            thread_id = GraphHost.thread_id(name, conversation_id, tenant)
            events = self._tracked(wire.name, name, self.host.events(name, call.text, thread_id, ticket, idempotency_key), started)
            if call.stream:
                media = "text/event-stream" if wire is self.openai else "application/x-ndjson"
                headers = {"X-Conversation-Id": conversation_id, "X-Slmgraph-Thread-Id": thread_id,
                           "Cache-Control": "no-cache"}
                response = _RunStream(wire.stream(call, name, events, conversation_id, self.cfg),
                                      media_type=media, headers=headers, ticket=ticket)
                handed = True
                return response
            try:
                result = await _until_disconnect(request, self._last(events))
            except _ClientGone:
                return Response(status_code=499)  # nobody is listening
            except Exception as exc:  # noqa: BLE001
                f = self.failure(exc)
                return wire.error(f, self._auth_headers(f))
            if idempotency_key is not None:  # a retry answers with the conversation of its first run
                conversation_id = result.thread_id.rpartition("/")[2] or conversation_id
            return wire.reply(name, result, conversation_id, started)
        finally:
            if not handed:
                ticket.release()

    @staticmethod
    async def _last(events: AsyncIterator[NodeEvent]) -> RunResult:
        result = None
        async with contextlib.aclosing(events) as running:  # type: ignore[type-var]
            async for event in running:
                result = event.result or result
        assert result is not None
        return result

    async def _tracked(
        self, protocol: str, name: str, events: AsyncIterator[NodeEvent], started: float,
    ) -> AsyncIterator[NodeEvent]:
        """Pass events through, recording the run, a disconnect or a failure in the metrics."""
        status, finished = 200, False
        try:
            async with contextlib.aclosing(events) as running:  # type: ignore[type-var]
                async for event in running:
                    if event.result is not None:
                        finished = True
                        self.metrics.observe_run(name, event.result)
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                status = 499
                self.metrics.observe_disconnect(protocol, name)
            raise
        except Exception as exc:
            status = failure_of(exc).status
            if is_storage_fault(exc):
                self.host.storage_failed(exc)
            elif status >= 500 and status not in (502, 503, 504):
                log.error("a served run of %s failed", name, exc_info=exc)
            raise
        finally:
            self.metrics.observe_request(protocol, name, status, time.perf_counter() - started)


def create_app(
    graphs: SLMGraph | Mapping[str, SLMGraph] | Sequence[SLMGraph],
    config: ServeConfig | None = None,
    *,
    metrics: Metrics | None = None,
) -> Starlette:
    """An ASGI app serving ``graphs`` as chat models over the OpenAI and Ollama protocols.

    Args:
        graphs: one graph (served under its ``name``), several, or a mapping of
            model name to graph.
        config: address, API keys and limits; see :class:`ServeConfig`.
        metrics: the metrics registry (a new one by default).

    Raises:
        ConfigError: no graph, or a non-loopback ``config.host`` without API keys.
    """
    cfg = config or ServeConfig()
    check_bind(cfg)
    server = _Server(_graphs(graphs), cfg, metrics or Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.host.start()
        server.watchdog.start()
        try:
            yield
        finally:
            await server.watchdog.stop()
            await server.host.aclose()

    async def not_found(request: Request, exc: HTTPException) -> Response:
        f = Failure(exc.status_code, "not_found" if exc.status_code == 404 else "method_not_allowed",
                    f"{request.method} {request.url.path}: {exc.detail}")
        wire: _Wire = server.ollama if request.url.path.startswith("/api/") else server.openai
        return wire.error(f)

    routes = [
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/v1/models", server.v1_models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.v1_model, methods=["GET"]),
        Route("/v1/chat/completions", server.v1_chat, methods=["POST"]),
        Route("/api/tags", server.api_tags, methods=["GET"]),
        Route("/api/chat", server.api_chat, methods=["POST"]),
    ]
    def guard_error(path: str, f: Failure) -> Response:
        wire: _Wire = server.ollama if path.startswith("/api/") else server.openai
        return wire.error(f)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The last line of defence: nothing escapes as a raw 500 with exception text or paths.
        if is_storage_fault(exc):
            server.host.storage_failed(exc)
        else:
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        f = failure_of(exc)
        response = guard_error(request.url.path, f)
        response.headers.update(server._auth_headers(f))
        return response

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: not_found, Exception: unexpected},
                    middleware=[Middleware(BrowserGuard, cfg=cfg, error=guard_error)])
    app.state.slmgraph = server
    return app
