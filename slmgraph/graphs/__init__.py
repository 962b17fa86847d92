"""Graph builders, the typed state and ready blueprints."""

from ._graph import DEFAULT_CHECKPOINT, NodeEvent, SLMGraph, build_graph
from ._blueprints import BUILTIN_CATEGORIES, GRAPHS, graph_from_config, register_graph, quickstart_graph, sentiment_skill, triage_skill
from ._state import NO_LARGE_MODEL, GraphState, RunResult
from ._thresholds import apply_config_thresholds, with_thresholds
from ._runs import RunRecord

__all__ = [
    "BUILTIN_CATEGORIES",
    "GRAPHS",
    "graph_from_config",
    "register_graph",
    "quickstart_graph",
    "sentiment_skill",
    "triage_skill",
   "build_graph", "SLMGraph", "NodeEvent", "GraphState", "RunResult", "NO_LARGE_MODEL", "DEFAULT_CHECKPOINT",
   "with_thresholds", "apply_config_thresholds"]
__all__ += ["RunRecord"]
