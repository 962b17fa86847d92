"""Serve graphs as chat models over the OpenAI and Ollama protocols.

``create_app(graphs, ServeConfig(...))`` gives an ASGI app; ``serve(...)`` runs it
on uvicorn. Routes: ``GET /v1/models``, ``POST /v1/chat/completions``,
``GET /api/tags``, ``POST /api/chat``, ``GET /healthz``, ``GET /metrics``.
See docs/serve.md.
"""

from .._errors import MissingDependencyError

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:  # pragma: no cover - both are dependencies of slmgraph
    raise MissingDependencyError("starlette/uvicorn (needed by slmgraph.serve)", "serve") from None

from ._app import create_app  # noqa: E402
from ._config import ServeConfig, check_bind, is_loopback, load_serve_config  # noqa: E402
from ._metrics import Metrics  # noqa: E402
from ._server import graphs_from_config, serve  # noqa: E402

__all__ = ["create_app", "serve", "ServeConfig", "load_serve_config", "check_bind", "is_loopback", "Metrics", "graphs_from_config"]
