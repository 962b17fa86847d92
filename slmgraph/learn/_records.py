"""The training record: one escalation (or one audited small-tier answer) as data.

A record holds what the learning loop needs to teach the small tier: the request,
the skill it was for, the small model's draft and why it escalated, the large
model's answer (typed, when the escalation was for a skill), what it cost, and
which graph and skill version served it. Records are redacted by the privacy
detectors before they are stored unless a store is told to keep them raw.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..privacy._detectors import Detector, GazetteerNameDetector, default_detectors
from ..privacy._logs import scrub

__all__ = ["LearningRecord", "ShadowResult", "RecordKind", "RECORD_SCHEMA", "record_key", "redactor", "canonical_json"]

#: The record format's version; a store refuses records of a newer format.
RECORD_SCHEMA = 1

#: ``escalation``: the small tier gave up and the large model answered.
#: ``audit``: a sampled accepted small-tier answer, spot-checked by the large model.
#: ``correction``: a human's answer, imported from JSON lines; it beats the teacher's.
RecordKind = Literal["escalation", "audit", "correction"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_key(*parts: Any) -> str:
    """A stable dedup key from its parts (e.g. run id and node)."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:32]


class LearningRecord(BaseModel):
    """One labelled example captured from the graph, or imported.

    Attributes:
        key: the dedup key: the same (run, node) always gives the same key, so a
            retried run never writes a second record.
        request: the request text (redacted unless the store keeps raw records).
        skill: the skill the request was for; ``None`` when no skill fitted.
        draft: the small model's draft, when it gave one.
        escalation_reason: why the request left the small tier.
        small_output: an audited record's accepted small-tier answer.
        teacher_answer: the large model's answer as text.
        teacher_output: the large model's typed output (the skill's schema), when
            the escalation was for a skill and the output validated.
        teacher_valid: the teacher's output passed the skill's schema and checks.
        label: the class label, for classification skills.
        cost_usd: what the record's large-model calls cost.
        weight: how many live requests the record stands for: 1 for an escalation
            (every one is recorded), ``1 / audit_sample`` for an audit, so a
            holdout of records estimates quality on the whole stream.
        graph_version, skill_version: what served the request.
    """

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: RecordKind = "escalation"
    created_at: float = Field(default_factory=time.time)
    request: str
    skill: str | None = None
    draft: Any = None
    escalation_reason: str | None = None
    escalation_detail: str | None = None
    small_output: Any = None
    teacher_answer: str | None = None
    teacher_output: dict[str, Any] | None = None
    teacher_valid: bool = False
    teacher_problem: str | None = None
    label: str | None = None
    cost_usd: float = 0.0
    weight: float = 1.0
    graph: str = ""
    graph_version: str = ""
    skill_version: str | None = None
    run_id: str = ""
    thread_id: str = ""
    redacted: bool = False
    schema_version: int = RECORD_SCHEMA

    def target(self) -> Any:
        """What the small tier should have answered: the label for classification,
        else the teacher's typed output, else its text."""
        if self.label is not None:
            return self.label
        return self.teacher_output if self.teacher_output is not None else self.teacher_answer

    def content(self) -> dict[str, Any]:
        """The fields that make a record's meaning (not when or where it was stored):
        what a snapshot's content hash covers."""
        return self.model_dump(mode="json", exclude={"thread_id"})


class ShadowResult(BaseModel):
    """A candidate version run in shadow on one live request: what it would have
    answered, beside what the served version did. It never answered anyone.

    Attributes:
        key: the dedup key (the run and the node), so a retried run writes one.
        candidate, served: the candidate's version and the one that answered
            (``None``: the skill as built).
        run_id, request: join the result to the run's escalation or audit record,
            whose teacher answer scores both sides.
        candidate_cost: what the candidate's own (small-tier) calls cost; it is kept
            here, never in the user's ledger.
    """

    model_config = ConfigDict(extra="forbid")

    key: str
    target: str
    candidate: str
    served: str | None = None
    at: float = Field(default_factory=time.time)
    run_id: str = ""
    thread_id: str = ""
    request: str
    served_escalated: bool
    served_output: Any = None
    candidate_escalated: bool
    candidate_output: Any = None
    candidate_reason: str | None = None
    candidate_cost: float = 0.0
    redacted: bool = False


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


_TEXT_FIELDS = ("request", "draft", "escalation_detail", "small_output", "teacher_answer", "teacher_output", "teacher_problem",
                "served_output", "candidate_output")


def redactor(detectors: Sequence[Detector] | None = None, *, names: bool = True) -> Callable[[Any], Any]:
    """A function that replaces every PII value in a record's texts by its kind
    (``<EMAIL>``, ``<CARD>``, ...), one way: nothing can be restored from a stored
    record. ``detectors`` defaults to slmgraph's pattern detectors plus (with
    ``names``) the built-in name list."""
    found = list(detectors) if detectors is not None else default_detectors()
    if detectors is None and names:
        found.append(GazetteerNameDetector())

    def apply(record: Any) -> Any:  # a LearningRecord or a ShadowResult
        fields = [f for f in _TEXT_FIELDS if f in type(record).model_fields]
        changes = {f: _walk(getattr(record, f), lambda t: scrub(t, found)) for f in fields}
        return record.model_copy(update={**changes, "redacted": True})

    return apply
