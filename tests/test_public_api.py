"""Pins the public API: a change here is a change users see."""

import slmgraph
import slmgraph.agents
import slmgraph.graphs
import slmgraph.models
import slmgraph.skills
import slmgraph.testing

EXPECTED = {
    "build_graph", "SLMGraph", "GraphState", "RunResult", "NodeEvent", "NO_LARGE_MODEL",
    "Skill", "Example", "AcceptancePolicy", "TextInput", "Accepted", "Rejected", "EscalationReason", "run_skill",
    "Router", "RouteDecision", "Rule", "RulesRouter", "ModelRouter", "ChainRouter", "EscalationAgent", "RunContext",
    "Model", "Message", "ModelSettings", "ModelReply", "OllamaModel", "OpenAIModel", "LlamaCppModel",
    "LangChainModel", "RetryPolicy", "RetryingModel",
    "LedgerEntry", "Price", "PriceTable", "RunTotals", "Config", "ModelConfig", "load_config",
    "build_model", "models_from_config", "prices_from_config", "harden",
    "SlmGraphError", "UserError", "ConfigError", "UnknownSkillError", "MissingDependencyError",
    "RequestError", "EmptyRequestError", "RequestTooLargeError", "ModelError", "ModelUnavailableError",
    "ModelTimeoutError", "ModelNotFoundError", "ModelHTTPError", "InvalidModelOutputError",
    "EscalationError", "StepLimitError", "__version__",
}
EXPECTED |= {
    "ModelOverloadedError", "MalformedResponseError", "IncompleteStreamError", "CircuitOpenError",
    "CircuitBreaker", "ConcurrencyLimit", "GuardedModel", "FallbackModel", "PooledModel",
}
EXPECTED |= {"ThreadBusyError", "CheckpointError", "RunRecord"}  # durable runs
EXPECTED |= {"skill_node", "router_node", "escalation_node", "fan_out", "SLMState", "SLMStateModel"}  # node factories


def test_top_level_exports_are_pinned():
    assert set(slmgraph.__all__) == EXPECTED
    assert len(slmgraph.__all__) == len(EXPECTED)  # no duplicates
    for name in slmgraph.__all__:
        assert hasattr(slmgraph, name), name


def test_subpackage_exports_resolve():
    for mod in (slmgraph.agents, slmgraph.graphs, slmgraph.models, slmgraph.skills, slmgraph.testing):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"
    assert set(slmgraph.testing.__all__) == {
        "ScriptedModel", "FunctionModel", "ModelCall", "Reply", "FaultServer",
        "LabelledText", "synthetic_pii_corpus", "evaluate", "SyntheticLog", "synthetic_transaction_log", "ANOMALY_KINDS", "LoopWatchdog",
    }  # fmt: skip


def test_error_tree_is_rooted():
    for name in slmgraph.__all__:
        obj = getattr(slmgraph, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, slmgraph.SlmGraphError), name
    assert issubclass(slmgraph.ModelNotFoundError, slmgraph.ModelError)
    assert issubclass(slmgraph.ConfigError, slmgraph.UserError)
    assert slmgraph.ModelUnavailableError.transient and not slmgraph.ModelNotFoundError.transient
