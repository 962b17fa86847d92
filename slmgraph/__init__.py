"""slmgraph: agent graphs of small language models.

Compose typed skills run by small models, route each request to the skill that
fits, escalate what they cannot do to a large model, and keep a ledger of every
call. See the README for a tour.

Names are imported on first use (PEP 562), so ``import slmgraph`` and ``slmgraph
--help`` load no LangGraph, backend SDK or LangChain module until one is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # graphs
    "build_graph": "slmgraph.graphs",
    "SLMGraph": "slmgraph.graphs",
    "GraphState": "slmgraph.graphs",
    "RunResult": "slmgraph.graphs",
    "NodeEvent": "slmgraph.graphs",
    "NO_LARGE_MODEL": "slmgraph.graphs",
    "RunRecord": "slmgraph.graphs",
    "skill_node": "slmgraph.graphs",
    "router_node": "slmgraph.graphs",
    "escalation_node": "slmgraph.graphs",
    "fan_out": "slmgraph.graphs",
    "SLMState": "slmgraph.graphs",
    "SLMStateModel": "slmgraph.graphs",
    # skills
    "Skill": "slmgraph.skills",
    "Example": "slmgraph.skills",
    "AcceptancePolicy": "slmgraph.skills",
    "TextInput": "slmgraph.skills",
    "Accepted": "slmgraph.skills",
    "Rejected": "slmgraph.skills",
    "EscalationReason": "slmgraph.skills",
    "run_skill": "slmgraph.skills",
    # agents
    "Router": "slmgraph.agents",
    "RouteDecision": "slmgraph.agents",
    "Rule": "slmgraph.agents",
    "RulesRouter": "slmgraph.agents",
    "ModelRouter": "slmgraph.agents",
    "ChainRouter": "slmgraph.agents",
    "EscalationAgent": "slmgraph.agents",
    "RunContext": "slmgraph._context",
    # models
    "Model": "slmgraph.models._base",
    "Message": "slmgraph.models._base",
    "ModelSettings": "slmgraph.models._base",
    "ModelReply": "slmgraph.models._base",
    "OllamaModel": "slmgraph.models._ollama",
    "OpenAIModel": "slmgraph.models._openai",
    "LlamaCppModel": "slmgraph.models._llamacpp",
    "LangChainModel": "slmgraph.models._langchain",
    "RetryPolicy": "slmgraph.models._retry",
    "RetryingModel": "slmgraph.models._retry",
    "CircuitBreaker": "slmgraph.models._breaker",
    "ConcurrencyLimit": "slmgraph.models._breaker",
    "GuardedModel": "slmgraph.models._breaker",
    "FallbackModel": "slmgraph.models._fallback",
    "PooledModel": "slmgraph.models._pool",
    "harden": "slmgraph._harden",
    # ledger and config
    "LedgerEntry": "slmgraph.ledger",
    "Price": "slmgraph.ledger",
    "PriceTable": "slmgraph.ledger",
    "RunTotals": "slmgraph.ledger",
    "Config": "slmgraph.config",
    "ModelConfig": "slmgraph.config",
    "load_config": "slmgraph.config",
    "build_model": "slmgraph._factory",
    "models_from_config": "slmgraph._factory",
    "prices_from_config": "slmgraph._factory",
}
_EXPORTS.update(
    dict.fromkeys(
        [
            "SlmGraphError", "UserError", "ConfigError", "UnknownSkillError", "MissingDependencyError",
            "RequestError", "EmptyRequestError", "RequestTooLargeError", "IdempotencyKeyReusedError", "ModelError", "ModelUnavailableError",
            "ModelTimeoutError", "ModelNotFoundError", "ModelHTTPError", "InvalidModelOutputError",
            "EscalationError", "StepLimitError", "ModelOverloadedError", "MalformedResponseError",
            "IncompleteStreamError", "CircuitOpenError", "ThreadBusyError", "CheckpointError",
            "StateSchemaError", "RequestShapeError",
        ],
        "slmgraph._errors",
    )
)  # fmt: skip

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from ._context import RunContext
    from ._errors import (
        CheckpointError,
        CircuitOpenError,
        ConfigError,
        EmptyRequestError,
        IdempotencyKeyReusedError,
        EscalationError,
        IncompleteStreamError,
        InvalidModelOutputError,
        MalformedResponseError,
        MissingDependencyError,
        ModelError,
        ModelHTTPError,
        ModelNotFoundError,
        ModelOverloadedError,
        ModelTimeoutError,
        ModelUnavailableError,
        RequestError,
        RequestShapeError,
        RequestTooLargeError,
        SlmGraphError,
        StateSchemaError,
        StepLimitError,
        ThreadBusyError,
        UnknownSkillError,
        UserError,
    )
    from ._factory import build_model, models_from_config, prices_from_config
    from ._harden import harden
    from .agents import ChainRouter, EscalationAgent, ModelRouter, RouteDecision, Router, Rule, RulesRouter
    from .config import Config, ModelConfig, load_config
    from .graphs import (
        NO_LARGE_MODEL,
        GraphState,
        NodeEvent,
        RunRecord,
        RunResult,
        SLMGraph,
        SLMState,
        SLMStateModel,
        build_graph,
        escalation_node,
        fan_out,
        router_node,
        skill_node,
    )
    from .ledger import LedgerEntry, Price, PriceTable, RunTotals
    from .models import (
        CircuitBreaker,
        ConcurrencyLimit,
        FallbackModel,
        GuardedModel,
        LangChainModel,
        LlamaCppModel,
        Message,
        Model,
        ModelReply,
        ModelSettings,
        OllamaModel,
        OpenAIModel,
        PooledModel,
        RetryingModel,
        RetryPolicy,
    )
    from .skills import AcceptancePolicy, Accepted, EscalationReason, Example, Rejected, Skill, TextInput, run_skill
