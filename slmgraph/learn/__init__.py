"""The learning loop: every escalation teaches the small tier.

capture -> curate and version -> specialise -> shadow-evaluate -> promote or roll back::

    from slmgraph.learn import Learner, SqliteLearningStore, with_learning
    store = SqliteLearningStore(".slmgraph/learning.sqlite")
    graph = with_learning(helpdesk, store)          # records escalations, serves promoted versions
    ...                                             # run traffic
    await Learner.for_graph(graph, store).cycle("triage")   # snapshot, candidate, shadow eval, promote

See ``docs/learning.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names and the private modules they live in; imported on first use, so
#: the CLI's ``--help`` does not load LangGraph through this package.
_EXPORTS = {
    "Capture": "._capture",
    "teacher_output": "._capture",
    "curate": "._curate",
    "label_balance": "._curate",
    "load_corrections": "._curate",
    "CachedEmbedder": "._embedcache",
    "cached": "._embedcache",
    "CorruptSnapshotError": "._errors",
    "EmptySnapshotError": "._errors",
    "LearningError": "._errors",
    "SchemaMismatchError": "._errors",
    "TrainingInterruptedError": "._errors",
    "UnknownVersionError": "._errors",
    "CycleResult": "._loop",
    "DriftMonitor": "._loop",
    "Learner": "._loop",
    "LearningRecord": "._records",
    "ShadowResult": "._records",
    "LiveShadow": "._live",
    "live_report": "._live",
    "record_key": "._records",
    "redactor": "._records",
    "VersionCache": "._serving",
    "VersionedRunner": "._serving",
    "with_learning": "._serving",
    "ShadowReport": "._shadow",
    "bootstrap": "._shadow",
    "compare": "._shadow",
    "decide": "._shadow",
    "shadow_run": "._shadow",
    "DEFAULT_LEARNING_STORE": "._sqlite",
    "SqliteLearningStore": "._sqlite",
    "PostgresLearningStore": "._postgres",
    "Event": "._store",
    "LearningStore": "._store",
    "Snapshot": "._store",
    "Version": "._store",
    "MemoryStrategy": "._strategies",
    "Strategy": "._strategies",
    "apply_version": "._strategies",
    "register_strategy": "._strategies",
    "LoraStrategy": "._lora",
    "LoraSettings": "._lora",
    "train_lora": "._lora",
    "peft_to_gguf": "._gguf_lora",
    "write_modelfile": "._gguf_lora",
    "HeadStrategy": "._head",
    "LearningConfig": "._config",
    "write_report": "._report",
    "first_candidate_model": "._doubles",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'slmgraph.learn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
