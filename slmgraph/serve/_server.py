"""Running the app on uvicorn, and building served graphs from the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..config import Config
from ..graphs._graph import SLMGraph
from ._app import create_app
from ._config import ServeConfig

__all__ = ["serve", "graphs_from_config"]


def graphs_from_config(names: Sequence[str], config: Config) -> dict[str, SLMGraph]:
    """The ready graphs ``names`` (see ``slmgraph.graphs.GRAPHS``), built with ``config``'s
    models and prices; each is served under its registry name."""
    from ..graphs._blueprints import graph_from_config

    return {name: graph_from_config(name, config) for name in dict.fromkeys(names)}


def serve(
    graphs: SLMGraph | Mapping[str, SLMGraph] | Sequence[SLMGraph],
    config: ServeConfig | None = None,
    *,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve ``graphs`` on uvicorn until interrupted (Ctrl-C / SIGTERM).

    With ``workers > 1``, that many processes accept on one port; they share
    state through the graphs' store (PostgreSQL for several machines).

    Raises:
        ConfigError: a non-loopback host without API keys (checked before binding).
    """
    cfg = config or ServeConfig()
    import uvicorn

    if workers <= 1:
        app = create_app(graphs, cfg)
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, timeout_graceful_shutdown=10)
        return
    from ._config import check_bind
    from ._workers import run_workers

    check_bind(cfg)

    def child(sock) -> None:  # in each forked process: its own app, loop and pools
        app = create_app(graphs, cfg)
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10))
        server.run(sockets=[sock])

    run_workers(workers, cfg.host, cfg.port, child)
