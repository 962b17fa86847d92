"""The actors that run in graph nodes: routers and the escalation agent."""

from ._escalation import EscalationAgent, EscalationResult, ToolCall
from ._router import ChainRouter, ModelRouter, RouteDecision, Router, Rule, RulesRouter
from ._embedding import EmbeddingChoice, EmbeddingRouter

__all__ = [
    "Router",
    "RouteDecision",
    "Rule",
    "RulesRouter",
    "ModelRouter",
    "ChainRouter",
    "EscalationAgent",
    "EscalationResult",
    "ToolCall",
    "EmbeddingRouter",
    "EmbeddingChoice",
]
