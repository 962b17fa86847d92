"""The learning loop: every escalation teaches the small tier.

capture -> curate and version -> specialise -> shadow-evaluate -> promote or roll back::

    from slmgraph.learn import Learner, SqliteLearningStore, with_learning
    store = SqliteLearningStore(".slmgraph/learning.sqlite")
    graph = with_learning(helpdesk, store)          # records escalations, serves promoted versions
    ...                                             # run traffic
    await Learner.for_graph(graph, store).cycle("triage")   # snapshot, candidate, shadow eval, promote

See ``docs/learning.md``.
"""

from ._capture import Capture, teacher_output
from ._curate import curate, label_balance, load_corrections
from ._embedcache import CachedEmbedder, cached
from ._errors import (
    CorruptSnapshotError,
    EmptySnapshotError,
    LearningError,
    SchemaMismatchError,
    TrainingInterruptedError,
    UnknownVersionError,
)
from ._loop import CycleResult, DriftMonitor, Learner
from ._records import LearningRecord, record_key, redactor
from ._serving import VersionCache, VersionedRunner, with_learning
from ._shadow import ShadowReport, bootstrap, compare, decide, shadow_run
from ._sqlite import DEFAULT_LEARNING_STORE, SqliteLearningStore
from ._store import Event, LearningStore, Snapshot, Version
from ._strategies import MemoryStrategy, Strategy, apply_version, register_strategy

__all__ = [
    "Capture",
    "teacher_output",
    "curate",
    "label_balance",
    "load_corrections",
    "CachedEmbedder",
    "cached",
    "LearningError",
    "EmptySnapshotError",
    "CorruptSnapshotError",
    "SchemaMismatchError",
    "UnknownVersionError",
    "TrainingInterruptedError",
    "Learner",
    "CycleResult",
    "DriftMonitor",
    "LearningRecord",
    "record_key",
    "redactor",
    "VersionCache",
    "VersionedRunner",
    "with_learning",
    "ShadowReport",
    "bootstrap",
    "compare",
    "decide",
    "shadow_run",
    "SqliteLearningStore",
    "DEFAULT_LEARNING_STORE",
    "LearningStore",
    "Snapshot",
    "Version",
    "Event",
    "MemoryStrategy",
    "Strategy",
    "apply_version",
    "register_strategy",
]
