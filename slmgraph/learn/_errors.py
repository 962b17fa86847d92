"""The learning loop's errors: a branch of slmgraph's tree under :class:`LearningError`.

    SlmGraphError
    └── LearningError                 the learning loop cannot go on as asked
        ├── EmptySnapshotError        no usable record to curate, train or evaluate on
        ├── CorruptSnapshotError      a snapshot's content does not match its hash
        ├── SchemaMismatchError       a version was made for another output schema or store format
        ├── UnknownVersionError       no such version, snapshot or target in the registry
        └── TrainingInterruptedError  a training run stopped midway (its checkpoint is kept)

Every message says what went wrong and what to do. No error deletes a record:
records are only ever added to the store.
"""

from __future__ import annotations

from .._errors import SlmGraphError

__all__ = [
    "LearningError",
    "EmptySnapshotError",
    "CorruptSnapshotError",
    "SchemaMismatchError",
    "UnknownVersionError",
    "TrainingInterruptedError",
]


class LearningError(SlmGraphError):
    """The learning loop cannot go on as asked."""


class EmptySnapshotError(LearningError):
    """Nothing usable to curate, train or evaluate on."""

    def __init__(self, what: str, hint: str = "") -> None:
        super().__init__(f"{what}; {hint or 'capture more records (run the graph with learning on) and curate again'}")


class CorruptSnapshotError(LearningError):
    """A stored snapshot's content no longer matches its content hash."""

    def __init__(self, snapshot: str, why: str) -> None:
        self.snapshot = snapshot
        super().__init__(
            f"snapshot {snapshot!r} is corrupt ({why}); its records are still in the store: "
            "curate a new snapshot with `slmgraph data snapshot`"
        )


class SchemaMismatchError(LearningError):
    """A version, record or store was made for another schema than the one in use."""


class UnknownVersionError(LearningError):
    """The registry has no such version, snapshot or target."""

    def __init__(self, kind: str, name: str, known: list[str] | None = None) -> None:
        self.name = name
        extra = f"; known: {', '.join(known[:10])}" if known else ""
        super().__init__(f"no {kind} {name!r} in the learning store{extra}; see `slmgraph learn status`")


class TrainingInterruptedError(LearningError):
    """A training run stopped before it finished; run it again to resume from its checkpoint."""
