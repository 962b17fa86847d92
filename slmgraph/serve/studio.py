"""Module-level compiled graphs for LangGraph's own tooling (``langgraph dev``, Studio).

``langgraph.json`` at the repository root points at attributes of this file, e.g.
``"quickstart": "./slmgraph/serve/studio.py:quickstart"``. LangGraph reads the
module's namespace directly, so each graph is a plain module-level name: to add a
registered graph, add ``name = compiled("name")`` here and a line to
``langgraph.json``. Graphs are built from the usual
configuration (``SLMGRAPH_*`` / ``OLLAMA_HOST`` / ``OPENAI_*`` environment, or the
TOML file named by ``SLMGRAPH_CONFIG``), and compiled *without* a checkpointer:
the LangGraph server brings its own persistence.

Input in Studio: ``{"request": "I was charged twice for one purchase"}``.
"""

from __future__ import annotations

import os

from langgraph.graph.state import CompiledStateGraph

from slmgraph.config import load_config
from slmgraph.graphs._blueprints import graph_from_config

__all__ = ["compiled", "quickstart"]


def compiled(name: str) -> CompiledStateGraph:
    """The ready graph ``name``, built from the configuration and compiled for LangGraph."""
    cfg = load_config(os.environ.get("SLMGRAPH_CONFIG") or None)
    return graph_from_config(name, cfg).compile()


quickstart = compiled("quickstart")
