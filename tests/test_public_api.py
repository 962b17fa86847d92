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
    "RequestError", "EmptyRequestError", "RequestTooLargeError", "IdempotencyKeyReusedError", "ModelError", "ModelUnavailableError",
    "ModelTimeoutError", "ModelNotFoundError", "ModelHTTPError", "InvalidModelOutputError",
    "EscalationError", "StepLimitError", "__version__",
}
EXPECTED |= {
    "ModelOverloadedError", "MalformedResponseError", "IncompleteStreamError", "CircuitOpenError",
    "CircuitBreaker", "ConcurrencyLimit", "GuardedModel", "FallbackModel", "PooledModel",
}
EXPECTED |= {"ThreadBusyError", "CheckpointError", "RunRecord"}  # durable runs
EXPECTED |= {"skill_node", "router_node", "escalation_node", "fan_out", "SLMState", "SLMStateModel"}  # node factories
EXPECTED |= {"StateSchemaError", "RequestShapeError"}  # a state without slmgraph's fields; a request of the wrong shape


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
        "LabelledText", "synthetic_pii_corpus", "evaluate", "SyntheticLog", "synthetic_transaction_log", "ANOMALY_KINDS",
        "LoopWatchdog",
    }  # fmt: skip


def test_error_tree_is_rooted():
    for name in slmgraph.__all__:
        obj = getattr(slmgraph, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, slmgraph.SlmGraphError), name
    assert issubclass(slmgraph.ModelNotFoundError, slmgraph.ModelError)
    assert issubclass(slmgraph.ConfigError, slmgraph.UserError)
    assert slmgraph.ModelUnavailableError.transient and not slmgraph.ModelNotFoundError.transient


def test_the_package_ships_py_typed():
    import tomllib
    from pathlib import Path

    root = Path(slmgraph.__file__).parent
    assert (root / "py.typed").is_file()
    project = tomllib.loads((root.parent / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["slmgraph"]


def test_scale_out_exports_are_pinned():
    import slmgraph.batch
    import slmgraph.storage

    assert set(slmgraph.storage.__all__) == {
        "is_postgres", "check_dsn", "redact_dsn", "pg_connect", "pg_pool", "PostgresStore", "PostgresRunStore",
        "postgres_store_of", "StorageError", "StorageUnavailableError", "StorageAuthError", "StorageNotFoundError",
    }  # fmt: skip
    assert set(slmgraph.batch.__all__) == {
        "run_batch", "GraphSource", "Executor", "LocalExecutor", "RayExecutor", "BatchRow", "BatchSummary",
        "read_rows", "capacity",
    }  # fmt: skip
    for mod in (slmgraph.storage, slmgraph.batch):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"
    for err in (slmgraph.storage.StorageUnavailableError, slmgraph.storage.StorageAuthError,
                slmgraph.storage.StorageNotFoundError):
        assert issubclass(err, slmgraph.storage.StorageError) and issubclass(err, slmgraph.SlmGraphError)
    assert slmgraph.storage.StorageUnavailableError.transient


LEARN_EXPECTED = {
    "CachedEmbedder", "Capture", "CorruptSnapshotError", "CycleResult", "DEFAULT_LEARNING_STORE", "DriftMonitor",
    "EmptySnapshotError", "Event", "Learner", "LearningError", "LearningRecord", "LearningStore", "MemoryStrategy",
    "SchemaMismatchError", "ShadowReport", "Snapshot", "SqliteLearningStore", "Strategy", "TrainingInterruptedError",
    "UnknownVersionError", "Version", "VersionCache", "VersionedRunner", "apply_version", "bootstrap", "cached",
    "compare", "curate", "decide", "label_balance", "load_corrections", "record_key", "redactor",
    "register_strategy", "shadow_run", "teacher_output", "with_learning",
    "LoraStrategy", "LoraSettings", "train_lora", "peft_to_gguf", "write_modelfile", "HeadStrategy",
    "LearningConfig", "write_report", "first_candidate_model", "PostgresLearningStore",
    "ShadowResult", "LiveShadow", "live_report",
}


def test_learning_exports_are_pinned_and_its_errors_rooted():
    import slmgraph.learn as learn

    assert set(learn.__all__) == LEARN_EXPECTED
    for name in learn.__all__:
        obj = getattr(learn, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, slmgraph.SlmGraphError), name
    assert issubclass(learn.EmptySnapshotError, learn.LearningError)
