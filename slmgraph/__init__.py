"""slmgraph: agent graphs of small language models.

Compose typed skills run by small models, route each request to the skill that
fits, escalate what they cannot do to a large model, and keep a ledger of every
call. See the README for a tour.
"""

from ._context import RunContext
from ._errors import (
    ConfigError,
    EmptyRequestError,
    EscalationError,
    InvalidModelOutputError,
    MissingDependencyError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
    RequestError,
    RequestTooLargeError,
    SlmGraphError,
    StepLimitError,
    UnknownSkillError,
    UserError,
)
from .agents import ChainRouter, EscalationAgent, ModelRouter, RouteDecision, Router, Rule, RulesRouter
from ._harden import harden
from ._factory import build_model, models_from_config, prices_from_config
from .config import Config, ModelConfig, load_config
from .graphs import NO_LARGE_MODEL, GraphState, NodeEvent, RunResult, SLMGraph, build_graph
from .ledger import LedgerEntry, Price, PriceTable, RunTotals
from .models import (
    LangChainModel,
    LlamaCppModel,
    Message,
    Model,
    ModelReply,
    ModelSettings,
    OllamaModel,
    OpenAIModel,
    RetryingModel,
    RetryPolicy,
)
from .skills import AcceptancePolicy, Accepted, EscalationReason, Example, Rejected, Skill, TextInput, run_skill

from ._errors import CheckpointError, ThreadBusyError
from .graphs import RunRecord

__version__ = "0.1.0"

__all__ = [
    # graphs
    "build_graph",
    "SLMGraph",
    "GraphState",
    "RunResult",
    "NodeEvent",
    "NO_LARGE_MODEL",
    # skills
    "Skill",
    "Example",
    "AcceptancePolicy",
    "TextInput",
    "Accepted",
    "Rejected",
    "EscalationReason",
    "run_skill",
    # agents
    "Router",
    "RouteDecision",
    "Rule",
    "RulesRouter",
    "ModelRouter",
    "ChainRouter",
    "EscalationAgent",
    "RunContext",
    # models
    "Model",
    "Message",
    "ModelSettings",
    "ModelReply",
    "OllamaModel",
    "OpenAIModel",
    "LlamaCppModel",
    "LangChainModel",
    "RetryPolicy",
    "RetryingModel",
    # ledger and config
    "LedgerEntry",
    "Price",
    "PriceTable",
    "RunTotals",
    "Config",
    "ModelConfig",
    "load_config",
    "build_model",
    "models_from_config",
    "prices_from_config",
    "harden",
    # errors
    "SlmGraphError",
    "UserError",
    "ConfigError",
    "UnknownSkillError",
    "MissingDependencyError",
    "RequestError",
    "EmptyRequestError",
    "RequestTooLargeError",
    "ModelError",
    "ModelUnavailableError",
    "ModelTimeoutError",
    "ModelNotFoundError",
    "ModelHTTPError",
    "InvalidModelOutputError",
    "EscalationError",
    "StepLimitError",
    "__version__",
]

# Reliability: typed transport faults, breaker, fallback, host pool (appended).
from ._errors import CircuitOpenError, IncompleteStreamError, MalformedResponseError, ModelOverloadedError  # noqa: E402
from .models import CircuitBreaker, ConcurrencyLimit, FallbackModel, GuardedModel, PooledModel  # noqa: E402

__all__ += [
    "ModelOverloadedError",
    "MalformedResponseError",
    "IncompleteStreamError",
    "CircuitOpenError",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "GuardedModel",
    "FallbackModel",
    "PooledModel",
]
__all__ += ["ThreadBusyError", "CheckpointError", "RunRecord"]  # durable runs

# Node factories for any StateGraph, and the state mixins (appended).
from .graphs import SLMState, SLMStateModel, escalation_node, fan_out, router_node, skill_node  # noqa: E402

__all__ += ["skill_node", "router_node", "escalation_node", "fan_out", "SLMState", "SLMStateModel"]
