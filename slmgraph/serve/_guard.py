"""Browser defences in front of every route: ``Host``, ``Origin``, CORS and the
request's content type.

A key-less server on loopback trusts whoever can reach it, and a web page the
user visits can reach it: by a cross-site POST (CSRF) or by pointing its own name
at 127.0.0.1 (DNS rebinding). This ASGI middleware refuses both before a route
runs:

- ``Host`` must name the bind address, a loopback name (on a loopback or
  wildcard bind) or an entry of ``allowed_hosts``; otherwise 421. A rebound page
  sends its own name as ``Host``.
- ``Origin``, when a browser sends one, must be the server's own origin or listed
  in ``cors_origins``; otherwise 403. Only listed origins get CORS headers and
  preflight answers: CORS is off by default.
- A POST must declare ``Content-Type: application/json``; otherwise 415. Browsers
  send ``text/plain``, form and multipart bodies cross-site without a preflight.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import ServeConfig, is_loopback
from ._host import Failure

__all__ = ["BrowserGuard", "host_names"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_EXPOSED = "X-Conversation-Id, X-Slmgraph-Thread-Id, X-Slmgraph-Status, X-Slmgraph-Route, " \
           "X-Slmgraph-Cost-Usd, X-Slmgraph-Escalation-Reason, Retry-After"


def host_names(cfg: ServeConfig) -> frozenset[str] | None:
    """The ``Host`` names the server answers to; ``None`` when any is accepted
    (a wildcard bind with no ``allowed_hosts``: keys are required there anyway)."""
    bind = cfg.host.strip().lower().strip("[]")
    wildcard = bind in ("0.0.0.0", "::", "")
    names = set(cfg.allowed_hosts)
    if wildcard and not names:
        return None
    if not wildcard:
        names.add(bind)
    if wildcard or is_loopback(cfg.host):
        names |= _LOOPBACK_NAMES
    return frozenset(names)


def _hostname(authority: str) -> str:
    """``host`` of ``host[:port]`` / ``[v6][:port]``, lower case, no trailing dot."""
    a = authority.strip().lower()
    if a.startswith("["):
        return a[1:].partition("]")[0]
    name, sep, port = a.rpartition(":")
    return (name if sep and port.isdigit() else a).rstrip(".")


class BrowserGuard:
    """ASGI middleware applying the checks of this module.

    Args:
        app: the app behind the guard.
        cfg: the server's settings (bind address, ``allowed_hosts``, ``cors_origins``).
        error: the protocol-shaped error response for a path.
    """

    def __init__(self, app: ASGIApp, cfg: ServeConfig, error: Callable[[str, Failure], Response]) -> None:
        self.app = app
        self.hosts = host_names(cfg)
        self.origins = frozenset(cfg.cors_origins)
        self.error = error

    def _host_refusal(self, headers: Headers) -> Failure | None:
        host = headers.get("host")
        if self.hosts is not None and (host is None or _hostname(host) not in self.hosts):
            return Failure(421, "misdirected_request",
                           f"this server does not answer to the host {host!r}; add it to serve.allowed_hosts "
                           "if it is one of this server's names")
        return None

    def _refusal(self, scope: Scope, headers: Headers) -> Failure | None:
        refused = self._host_refusal(headers)
        if refused is not None:
            return refused
        host = headers.get("host")
        origin = headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in self.origins:
            same = host is not None and origin.lower().partition("://")[2].rstrip("/") == host.lower()
            if not same:
                return Failure(403, "forbidden_origin",
                               f"requests from the web origin {origin!r} are refused; list it in "
                               "serve.cors_origins to allow a browser app there")
        if scope["method"] == "POST":
            media = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json":
                return Failure(415, "unsupported_media_type",
                               f"a POST body must be sent as `Content-Type: application/json` (got {media or 'none'!r})")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin is not None and origin.lower().rstrip("/") in self.origins
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight and allowed and self._host_refusal(headers) is None:
            await self._preflight(origin, headers)(scope, receive, send)  # type: ignore[arg-type]
            return
        refused = self._refusal(scope, headers)
        if refused is not None:
            response = self.error(scope["path"], refused)
            response.headers["Vary"] = "Origin"
            await response(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"access-control-allow-origin", origin.encode("latin-1")),  # type: ignore[union-attr]
                         (b"access-control-expose-headers", _EXPOSED.encode()), (b"vary", b"Origin")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_cors)

    def _preflight(self, origin: str, headers: Headers) -> Response:
        asked = headers.get("access-control-request-headers", "")
        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": asked or "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })  # fmt: skip
