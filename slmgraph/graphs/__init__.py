"""Graph builders, the typed state and ready blueprints."""

from ._graph import DEFAULT_CHECKPOINT, NodeEvent, SLMGraph, build_graph
from ._state import NO_LARGE_MODEL, GraphState, RunResult

__all__ = ["build_graph", "SLMGraph", "NodeEvent", "GraphState", "RunResult", "NO_LARGE_MODEL", "DEFAULT_CHECKPOINT"]
