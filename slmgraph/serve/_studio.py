"""Building the ready graphs for LangGraph's own tooling (see :mod:`slmgraph.serve.studio`)."""

from __future__ import annotations

import functools
import os

from langgraph.graph.state import CompiledStateGraph

from slmgraph.config import load_config
from slmgraph.graphs._blueprints import graph_from_config

__all__ = ["compiled", "ready"]


def compiled(name: str) -> CompiledStateGraph:
    """The ready graph ``name``, built from the configuration and compiled for LangGraph
    (without a checkpointer: the LangGraph server brings its own persistence)."""
    cfg = load_config(os.environ.get("SLMGRAPH_CONFIG") or None)
    return graph_from_config(name, cfg).compile()


@functools.cache
def ready(name: str) -> CompiledStateGraph:
    """:func:`compiled`, once per process. LangGraph executes ``studio.py`` afresh for
    every graph ``langgraph.json`` names; this module is imported the usual way, so
    each graph is still built only once."""
    return compiled(name)
