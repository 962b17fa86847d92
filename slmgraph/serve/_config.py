"""How a served graph listens: address, keys, limits.

A TOML file may hold a ``[serve]`` table::

    [serve]
    host = "0.0.0.0"             # anything but loopback needs api_keys
    port = 8000
    api_keys = ["change-me-to-a-long-random-string"]
    max_concurrency = 8          # graph runs at once; the rest wait in a queue
    max_queue = 64               # waiting runs beyond this get 503
    max_starting = 2             # runs in set-up (before their first model call) at once
    max_body_bytes = 1048576
    allowed_hosts = ["chat.internal"]   # Host names accepted besides the bind address
    cors_origins = []            # browser origins allowed to call the API (off by default)
    drain_seconds = 10           # on SIGTERM, how long running requests may finish

Environment: ``SLMGRAPH_API_KEYS`` (comma-separated bearer tokens),
``SLMGRAPH_SERVE_HOST``, ``SLMGRAPH_SERVE_PORT``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from .._errors import ConfigError

__all__ = ["ServeConfig", "load_serve_config", "is_loopback", "check_bind"]


class ServeConfig(BaseModel):
    """Settings of ``slmgraph serve``.

    Attributes:
        host: address to bind; loopback (``127.0.0.1``) by default. Any other
            address needs ``api_keys``.
        port: TCP port.
        api_keys: bearer tokens a client must send (``Authorization: Bearer KEY``);
            empty means no authentication (allowed on loopback only).
        max_body_bytes: larger request bodies get 413.
        max_concurrency: graph runs in progress at once; further requests queue.
        max_queue: requests waiting for a slot beyond this get 503 at once.
        max_starting: runs doing their set-up (recorded, leased, first checkpoints
            written) at once, before their first model call; in a burst the first
            runs admitted then reach the model hosts first, instead of all of them
            interleaving and the hosts waiting (see ``slmgraph/_starting.py``).
        stream_chunk_chars: a streamed answer is sent in pieces of this many characters.
        conversation_id_max: longest accepted conversation id.
        allowed_hosts: ``Host`` header names accepted besides the bind address (and,
            on loopback, ``localhost``/``127.0.0.1``/``[::1]``); a request naming any
            other host gets 421 (DNS rebinding). A wildcard bind (``0.0.0.0``) checks
            ``Host`` only when this list is set.
        cors_origins: browser origins (``https://app.example``) that may call the API
            across origins; empty (the default) means CORS is off and any request
            carrying a foreign ``Origin`` is refused with 403.
        max_json_depth: deepest nesting accepted in a request body (400 beyond).
        header_timeout: seconds a client may take to send a request's headers.
        body_timeout: seconds a client may take to send a request's body (408 beyond).
        drain_seconds: on SIGTERM, how long requests in progress may finish before
            the server stops them (their runs stay recoverable) and exits.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, repr=False)
    max_body_bytes: PositiveInt = 1_048_576
    max_concurrency: PositiveInt = 8
    max_queue: int = Field(default=64, ge=0)
    max_starting: PositiveInt = 2
    stream_chunk_chars: PositiveInt = 32
    conversation_id_max: PositiveInt = 200
    allowed_hosts: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    max_json_depth: PositiveInt = 64
    header_timeout: PositiveFloat = 10.0
    body_timeout: PositiveFloat = 30.0
    drain_seconds: PositiveFloat = 10.0

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        keys = [k.strip() for k in v]
        if any(not k for k in keys):
            raise ValueError("an API key must not be empty")
        return keys

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            h = h.strip().lower()
            if not h or any(c in h for c in "/ @"):
                raise ValueError(f"{h!r} is not a host name (give it without scheme or path)")
            out.append(h)
        return out

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for o in v:
            o = o.strip().rstrip("/").lower()
            scheme, sep, rest = o.partition("://")
            if o == "*" or not sep or scheme not in ("http", "https") or not rest or "/" in rest:
                raise ValueError(f"{o!r} is not an origin: give scheme://host[:port], no wildcard")
            out.append(o)
        return out


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_bind(config: ServeConfig) -> None:
    """Refuse to listen beyond this machine without API keys.

    Raises:
        ConfigError: ``host`` is not loopback and no API key is configured.
    """
    if not is_loopback(config.host) and not config.api_keys:
        raise ConfigError(
            "serve.api_keys",
            f"refusing to listen on {config.host!r} without API keys: anyone who can reach "
            "it could run the graph. Set SLMGRAPH_API_KEYS (comma-separated) or `api_keys` "
            "in the [serve] table, or bind 127.0.0.1",
        )


_ENV = {"SLMGRAPH_SERVE_HOST": "host", "SLMGRAPH_SERVE_PORT": "port", "SLMGRAPH_API_KEYS": "api_keys"}


def load_serve_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """Build a :class:`ServeConfig` from the ``[serve]`` table of a TOML file, the
    environment and explicit overrides (later wins; ``None`` overrides are ignored).

    Raises:
        ConfigError: naming the bad field, e.g. ``serve.port``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            table = tomllib.loads(p.read_text(encoding="utf-8")).get("serve", {})
        except FileNotFoundError:
            raise ConfigError("config", f"file {str(p)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError("config", f"cannot read {str(p)!r} as TOML: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError("serve", "must be a table")
        data.update(table)
    for var, key in _ENV.items():
        value = (os.environ if env is None else env).get(var)
        if value:
            data[key] = [k for k in value.split(",") if k.strip()] if key == "api_keys" else value
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"serve.{field}", err["msg"]) from None
