"""Graph builders, node factories, the typed state and ready blueprints."""

from ._graph import DEFAULT_CHECKPOINT, GraphSpec, NodeEvent, SLMGraph, build_graph, routed_graph
from ._blueprints import BUILTIN_CATEGORIES, GRAPHS, graph_from_config, register_graph, quickstart_graph, sentiment_skill, triage_skill
from ._nodes import SkillNode, fan_out, skill_node
from ._route_nodes import EscalationNode, RouterNode, escalation_node, router_node
from ._result import RunResult
from ._runner import Runner, RunPolicy
from ._state import NEW_RUN, NO_LARGE_MODEL, GraphState, SLMState, SLMStateModel, add_run_list, run_reset
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
    "build_graph", "routed_graph", "GraphSpec", "SLMGraph", "NodeEvent", "GraphState", "RunResult",
    "NO_LARGE_MODEL", "DEFAULT_CHECKPOINT", "with_thresholds", "apply_config_thresholds", "RunRecord",
    # node factories and state mixins
    "skill_node", "router_node", "escalation_node", "fan_out", "SkillNode", "RouterNode", "EscalationNode",
    "SLMState", "SLMStateModel", "add_run_list", "run_reset", "NEW_RUN", "Runner", "RunPolicy",
]
