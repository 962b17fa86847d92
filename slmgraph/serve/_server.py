"""Running the app on uvicorn, and building served graphs from the registry.

Two things uvicorn does not do on its own are added here:

- **A header timeout.** uvicorn times out idle keep-alive connections but not a
  client that sends half a request line or half its headers (slowloris): every
  connection must complete its headers within ``header_timeout`` seconds of
  opening (or of its previous response), else it is closed. The body has its own
  bound in the app (``body_timeout``, 408).
- **A bounded drain.** On SIGTERM (or Ctrl-C) the server stops accepting, lets the
  requests in progress finish for up to ``drain_seconds``, and then exits at once
  even if some have not. Runs still in progress are not cancelled: they stay
  recorded as running in the runs table, as after a crash, and the next
  ``slmgraph serve`` (or ``graph.recover()``) finishes them. The deadline is kept
  by a thread, so it holds even when the event loop is stuck.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .._errors import ConfigError
from ..config import Config
from ..graphs._graph import SLMGraph
from ._app import _graphs, create_app
from ._config import ServeConfig

__all__ = ["serve", "graphs_from_config", "check_checkpoints", "timed_protocol", "uvicorn_config"]

log = logging.getLogger("slmgraph.serve")


def graphs_from_config(names: Sequence[str], config: Config) -> dict[str, SLMGraph]:
    """The ready graphs ``names`` (see ``slmgraph.graphs.GRAPHS``), built with ``config``'s
    models and prices; each is served under its registry name."""
    from ..graphs._blueprints import graph_from_config

    return {name: graph_from_config(name, config) for name in dict.fromkeys(names)}


def check_checkpoints(graphs: Mapping[str, SLMGraph]) -> None:
    """Open each graph's SQLite checkpoint file (when it exists) and read its schema,
    before the server binds.

    Raises:
        ConfigError: on field ``checkpoint``, naming the file, when it is not a
            readable SQLite database (corrupted, truncated, another format).
    """
    for g in graphs.values():
        if not isinstance(g.checkpoint, str | os.PathLike):
            continue
        path = Path(g.checkpoint)
        if not path.exists():
            continue
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
                row = conn.execute("PRAGMA quick_check(1)").fetchone()
            conn.close()
        except sqlite3.Error as exc:
            raise ConfigError("checkpoint", f"{str(path)!r} is not a readable SQLite database ({exc}); "
                              "move it aside or restore it from a backup") from None
        if row is None or row[0] != "ok":
            raise ConfigError("checkpoint", f"{str(path)!r} is damaged ({row[0] if row else 'no answer'}); "
                              "move it aside or restore it from a backup")


def timed_protocol(base: type, header_timeout: float) -> type:
    """``base`` (a uvicorn HTTP protocol class) that closes a connection whose
    request headers are not complete ``header_timeout`` seconds after it opened or
    after its previous response."""

    class HeaderTimeout(base):  # type: ignore[misc, valid-type]
        _header_timer: Any = None
        _armed_for: Any = None

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._armed_for = self.cycle  # a new request gets a new cycle
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    HeaderTimeout.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout


def _http_protocol(header_timeout: float) -> type:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is in the serve extra; h11 is uvicorn's own fallback
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return timed_protocol(base, header_timeout)


def uvicorn_config(app: Any, cfg: ServeConfig, *, log_level: str = "info") -> Any:
    """The uvicorn configuration :func:`serve` runs ``app`` with: ``cfg``'s address,
    the header timeout, and no cancelling drain timeout of uvicorn's own."""
    import uvicorn

    return uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_level=log_level, http=_http_protocol(cfg.header_timeout),
        timeout_graceful_shutdown=None,  # the drain bound ends the process instead of cancelling runs
    )  # fmt: skip


def _bounded_server(config: Any, drain_seconds: float) -> Any:
    import uvicorn

    class BoundedServer(uvicorn.Server):
        """uvicorn's server with a hard bound on the drain after SIGTERM/SIGINT."""

        _deadline: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self._deadline is None:
                log.info("draining: requests in progress have %gs to finish", drain_seconds)
                self._deadline = threading.Timer(drain_seconds, self._drain_expired)
                self._deadline.daemon = True
                self._deadline.start()

        def _drain_expired(self) -> None:
            log.warning("drain bound of %gs reached with %d request(s) still running; exiting now. Their runs "
                        "stay recorded and the next `slmgraph serve` (or graph.recover()) finishes them",
                        drain_seconds, len(self.server_state.tasks))
            logging.shutdown()
            os._exit(0)

    return BoundedServer(config)


def serve(
    graphs: SLMGraph | Mapping[str, SLMGraph] | Sequence[SLMGraph],
    config: ServeConfig | None = None,
    *,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve ``graphs`` on uvicorn until interrupted (Ctrl-C / SIGTERM), then drain
    for at most ``config.drain_seconds`` (see the module docstring).

    With ``workers > 1``, that many processes accept on one port (see
    :mod:`._workers`); they share state through the graphs' store (PostgreSQL
    for several machines).

    Raises:
        ConfigError: a non-loopback host without API keys, or a checkpoint file that
            is not a readable SQLite database (both checked before binding).
    """
    cfg = config or ServeConfig()
    served = _graphs(graphs)
    check_checkpoints(served)
    _check_databases(served)
    _preload(served)
    _freeze_heap()
    if workers > 1:
        from ._config import check_bind
        from ._workers import run_workers

        check_bind(cfg)

        def child(sock: Any) -> None:  # in each forked process: its own app, loop and pools
            _run(create_app(served, cfg), cfg, log_level, sockets=[sock])

        run_workers(workers, cfg.host, cfg.port, child)
        return
    _run(create_app(served, cfg), cfg, log_level)


def _check_databases(graphs: Mapping[str, SLMGraph]) -> None:
    """Connect once to each PostgreSQL store before binding, so a bad database is
    one typed error (``StorageError``) instead of a failed server start-up."""
    import asyncio

    from ..storage._pg import pg_connect

    async def probe(dsn: str) -> None:
        await (await pg_connect(dsn)).close()

    for dsn in dict.fromkeys(str(g.checkpoint) for g in graphs.values() if g.runner.pg is not None):
        asyncio.run(probe(dsn))


def _preload(graphs: Mapping[str, SLMGraph]) -> None:
    """Ready the models once before serving, and before forking any server
    process (see :func:`~._host.prepare_models`): the client libraries are then
    imported once, here, and inherited by every process. The clients made here
    belong to this short-lived loop and are closed with it; each process makes its
    own on its loop before it accepts requests."""
    import asyncio

    from ._host import prepare_models

    async def once() -> None:
        await prepare_models(graphs.values())
        for g in graphs.values():
            for model in g.spec.models.values():
                await model.aclose()

    asyncio.run(once())


def _freeze_heap() -> None:
    """Move everything allocated so far (modules, classes, schemas, graphs: most of
    the heap) out of the garbage collector's sight, as Python's ``gc`` documentation
    advises before forking.

    Otherwise every full collection walks those objects again: with the libraries
    a server loads, one took 0.1 to 0.5 s in a serve process during a burst of
    requests (2 cores shared by 4 server processes), stalling every run of that
    process. Frozen objects are never collected; garbage is collected first, so
    only what is alive stays. Forked processes also keep sharing those pages
    instead of copying them when a collection touches them."""
    import gc

    gc.collect()
    gc.freeze()


def _run(app: Any, cfg: ServeConfig, log_level: str, sockets: list | None = None) -> None:
    server = _bounded_server(uvicorn_config(app, cfg, log_level=log_level), cfg.drain_seconds)
    try:
        server.run(sockets=sockets)
    finally:
        if server._deadline is not None:  # drained in time
            server._deadline.cancel()
