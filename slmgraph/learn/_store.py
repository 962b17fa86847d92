"""The learning store seam: records, snapshots, versions and the registry pointer.

:class:`LearningStore` is the interface; :class:`~slmgraph.learn.SqliteLearningStore`
implements it in one SQLite file (the default), and a PostgreSQL store can
implement the same methods. Records are only ever added (never updated or
deleted); snapshots and versions are immutable once written; promotion and
rollback change one pointer per target atomically and log why.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import logging
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from ._errors import CorruptSnapshotError, SchemaMismatchError
from ._records import RECORD_SCHEMA, LearningRecord, RecordKind, ShadowResult, canonical_json

__all__ = ["LearningStore", "Snapshot", "Version", "Event", "snapshot_hash", "STORE_FORMAT",
           "decode_records", "decode_snapshot", "check_record", "newer_format"]

log = logging.getLogger("slmgraph.learn")

#: The store's table layout; a store written by a newer slmgraph is refused.
STORE_FORMAT = 1


def snapshot_hash(target: str, train: Sequence[LearningRecord], holdout: Sequence[LearningRecord]) -> str:
    """The content hash of a snapshot: the same records in the same split always
    give the same hash; any change to any record's content changes it."""
    body = {"target": target, "train": [r.content() for r in train], "holdout": [r.content() for r in holdout]}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


class Snapshot(BaseModel):
    """An immutable, curated, time-ordered train/holdout split of one target's records.

    Attributes:
        id: the first 16 hex digits of ``content_hash``.
        target: the skill the records are for (``"*"``: all).
        report: what curation did (counts dropped by cause, label balance).
    """

    id: str
    content_hash: str
    target: str
    created_at: float = Field(default_factory=time.time)
    train: list[LearningRecord]
    holdout: list[LearningRecord]
    report: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def build(cls, target: str, train: list[LearningRecord], holdout: list[LearningRecord], report: dict[str, Any]) -> Snapshot:
        digest = snapshot_hash(target, train, holdout)
        return cls(id=digest[:16], content_hash=digest, target=target, train=train, holdout=holdout, report=report)

    def verify(self) -> Snapshot:
        """Check the content against the hash.

        Raises:
            CorruptSnapshotError: the records were changed after the snapshot was made.
        """
        digest = snapshot_hash(self.target, self.train, self.holdout)
        if digest != self.content_hash or not self.content_hash.startswith(self.id):
            raise CorruptSnapshotError(self.id, "its records do not match its content hash")
        return self

    @property
    def records(self) -> list[LearningRecord]:
        return [*self.train, *self.holdout]


class Version(BaseModel):
    """A candidate or promoted version of a target (a skill or router).

    Attributes:
        id: unique id, ``<target>@<strategy>-<hash>``.
        parent: the version it was made from (``None``: the skill as built).
        payload: what the strategy produced (examples and adopted labels for
            memory; the adapter's path for LoRA; ...).
        output_schema: hash of the skill's output JSON schema when the version was made.
        evaluation: the shadow evaluation's report, once evaluated.
    """

    id: str
    target: str
    strategy: str
    created_at: float = Field(default_factory=time.time)
    parent: str | None = None
    snapshot: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    output_schema: str = ""
    evaluation: dict[str, Any] | None = None


class Event(BaseModel):
    """One line of the registry's log: a promotion, a rollback (and why), a cycle."""

    seq: int = 0
    at: float = Field(default_factory=time.time)
    target: str
    kind: str
    version: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


def check_record(record: LearningRecord) -> str:
    """The record as stored JSON text.

    Raises:
        SchemaMismatchError: the record is of a newer format than this slmgraph reads.
    """
    if record.schema_version > RECORD_SCHEMA:
        raise SchemaMismatchError(f"record format {record.schema_version} is newer than {RECORD_SCHEMA}; upgrade slmgraph")
    return record.model_dump_json()


def decode_records(rows: Sequence[tuple[Any, str]]) -> list[LearningRecord]:
    """Stored ``(seq, body)`` rows as records. An unreadable row is kept in the store
    as it is and reported, never silently used or deleted.

    Raises:
        SchemaMismatchError: a record of a newer format.
    """
    out = []
    for seq, body in rows:
        try:
            rec = LearningRecord.model_validate_json(body)
        except ValidationError as exc:
            log.warning("learning record %s cannot be read (%s); skipped", seq, exc.errors()[0]["msg"])
            continue
        if rec.schema_version > RECORD_SCHEMA:
            raise SchemaMismatchError(f"record {seq} has format {rec.schema_version}, newer than {RECORD_SCHEMA}; upgrade slmgraph")
        out.append(rec)
    return out


def decode_snapshot(snapshot_id: str, body: str) -> Snapshot:
    """A stored snapshot body, verified against its hash.

    Raises:
        CorruptSnapshotError: unreadable, or its records do not match its hash.
    """
    try:
        snap = Snapshot.model_validate_json(body)
    except ValidationError as exc:
        raise CorruptSnapshotError(snapshot_id, f"its stored body cannot be read: {exc.errors()[0]['msg']}") from None
    return snap.verify()


def newer_format(where: str, found: int) -> SchemaMismatchError:
    """The error for a store written by a newer slmgraph."""
    return SchemaMismatchError(
        f"the learning store {where} has format {found}, newer than this slmgraph's "
        f"{STORE_FORMAT}; upgrade slmgraph or use another store"
    )


class LearningStore(ABC):
    """Where the learning loop keeps its data. All methods are async and never
    block the event loop.

    Attributes:
        where: what the store is, for messages (a path, or a DSN without its password).
        artifacts: the folder for files a version needs (LoRA adapters).
    """

    where: str = ""
    artifacts: Path = Path(".slmgraph")

    # -- records ------------------------------------------------------------------
    @abstractmethod
    async def add(self, record: LearningRecord) -> bool:
        """Store ``record`` unless one with its key exists; ``True`` if it was added."""

    @abstractmethod
    async def records(
        self, *, skill: str | None = None, kinds: Sequence[RecordKind] | None = None, since: float | None = None,
    ) -> list[LearningRecord]:
        """Records, oldest first, optionally for one skill, of some kinds, after a time."""

    @abstractmethod
    async def count(self, *, skill: str | None = None) -> dict[str, int]:
        """Record counts by kind."""

    @abstractmethod
    async def add_outcome(self, skill: str, version: str | None, escalated: bool, cost_usd: float, at: float) -> None:
        """Count one served run in the stream of its minute (for the stream report)."""

    @abstractmethod
    async def stream(self, skill: str | None = None) -> list[dict[str, Any]]:
        """Per-minute totals: ``{"minute", "skill", "version", "runs", "escalations", "cost_usd"}``, oldest first."""

    # -- snapshots ----------------------------------------------------------------
    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot; saving the same content again is a no-op."""

    @abstractmethod
    async def snapshot(self, snapshot_id: str) -> Snapshot:
        """A snapshot by id (or id prefix), verified against its hash.

        Raises:
            UnknownVersionError, CorruptSnapshotError.
        """

    @abstractmethod
    async def snapshots(self, target: str | None = None) -> list[dict[str, Any]]:
        """Summaries (id, target, created_at, sizes), newest first."""

    # -- versions and the registry ------------------------------------------------
    @abstractmethod
    async def save_version(self, version: Version) -> None:
        """Store a version (its evaluation may be updated once, when evaluated)."""

    @abstractmethod
    async def version(self, version_id: str) -> Version:
        """A version by id. Raises :class:`UnknownVersionError`."""

    @abstractmethod
    async def versions(self, target: str | None = None) -> list[Version]:
        """Versions, newest first."""

    @abstractmethod
    async def current(self, target: str) -> str | None:
        """The id of the version serving ``target`` (``None``: the skill as built). Cheap."""

    @abstractmethod
    async def history(self, target: str) -> list[str]:
        """The promoted versions still on the stack, oldest first (the last is current)."""

    @abstractmethod
    async def promote(self, target: str, version_id: str, reason: str = "", detail: dict[str, Any] | None = None) -> None:
        """Make ``version_id`` current for ``target``, atomically, and log it."""

    @abstractmethod
    async def rollback(
        self, target: str, reason: str, detail: dict[str, Any] | None = None, *, only_if: str | None = None,
    ) -> str | None:
        """Restore the version that was current before the last promotion, atomically,
        and log why; with ``only_if``, only while that version is current. Returns the
        version now current (``None``: the skill as built)."""

    @abstractmethod
    async def log(self, event: Event) -> None:
        """Append an event."""

    @abstractmethod
    async def events(self, target: str | None = None, limit: int = 100) -> list[Event]:
        """Events, oldest first (the last ``limit``)."""

    # -- live shadow ----------------------------------------------------------------
    @abstractmethod
    async def set_shadow(self, target: str, version_id: str | None, sample: float = 0.1, reason: str = "") -> None:
        """Run ``version_id`` in shadow on a ``sample`` share of ``target``'s live
        requests (``None``: stop), and log it."""

    @abstractmethod
    async def shadow_of(self, target: str) -> tuple[str, float] | None:
        """The version in shadow for ``target`` and its sample share, if any. Cheap."""

    @abstractmethod
    async def add_shadow(self, result: ShadowResult) -> bool:
        """Store a shadow result unless one with its key exists; ``True`` if added."""

    @abstractmethod
    async def shadow_results(self, version_id: str) -> list[ShadowResult]:
        """A candidate's shadow results, oldest first."""

    async def close(self) -> None:  # pragma: no cover - default: nothing to close
        """Release connections."""

    async def __aenter__(self) -> LearningStore:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


Action = Literal["promote", "rollback"]
