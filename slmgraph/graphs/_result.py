"""The typed result of a run, derived from the final graph state."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from ..ledger import LedgerEntry, PriceTable, RunTotals, run_totals
from ..models._base import Model
from ._state import NO_LARGE_MODEL, Status, status_of

__all__ = ["RunResult", "outcome_message"]

OutT = TypeVar("OutT", bound=BaseModel)

# Fields computed here rather than copied from the state.
_DERIVED = frozenset({"thread_id", "status", "output", "output_json", "message", "ledger", "totals", "run_id"})


class RunResult(BaseModel, Generic[OutT]):
    """The outcome of one run, read from the final graph state.

    Every field not listed below is the state field of the same name.

    Attributes:
        answer: the final answer as text (the accepted output as JSON, or the
            large model's answer); ``None`` when escalation was needed but missing.
        output: the accepted output as the skill's pydantic model (``OutT``), when
            a skill (or the large model on its behalf) answered.
        output_json: the same output as plain JSON, the form the state and the
            wire formats carry.
        draft: the specialist's draft when the request escalated; kept even when
            no large model is configured.
        escalations: one record per rejected sub-task (node, skill, reason, status).
        message: a human-readable line about the outcome.
        run_id: the id of this run in the durable runs table.
        error: the class name of the typed error that ended an escalation
            (e.g. ``"StepLimitError"``), when it ended with ``escalation_failed``.
    """

    thread_id: str
    status: Status
    route: str | None = None
    route_confidence: float | None = None
    answer: str | None = None
    output: OutT | None = Field(default=None, exclude=True)
    output_json: dict[str, Any] | None = None
    confidence: float | None = None
    draft: Any = None
    escalation_reason: str | None = None
    escalation_detail: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    escalations: list[dict[str, Any]] = Field(default_factory=list)
    message: str = ""
    ledger: list[LedgerEntry] = Field(default_factory=list)
    totals: RunTotals = Field(default_factory=RunTotals)
    run_id: str | None = None
    error: str | None = None

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        thread_id: str,
        prices: PriceTable | None = None,
        output_type: type[BaseModel] | None = None,
        output_key: str = "output",
        large: Model | None = None,
        request_key: str = "request",
    ) -> RunResult[Any]:
        """The result of the run whose final state is ``state``.

        Args:
            output_type: validates ``state[output_key]`` into :attr:`output`.
            output_key: the state field holding the run's output as JSON.
            request_key: the state field holding the run's input, whose tokens the
                direct-large baseline counts.
            large: the large model, whose tokenizer counts the direct-large baseline.
        """
        values = {k: v for k in _copied(cls) if (v := state.get(k)) is not None}
        if "answer" not in values and (said := _escalated_answer(state)) is not None:
            values["answer"] = said  # a state without an ``answer`` field: the record's copy
        if "escalation_reason" not in values and (why := _reason(state)) is not None:
            values["escalation_reason"] = why  # a pipeline's node escalated: its record says why
        for k, factory in _factories(cls):
            if k not in values:  # filled here: pydantic inspects the factory on every call
                values[k] = factory()
        # (Validated in pydantic-core, which is faster than model_construct.)
        entries = [LedgerEntry.model_validate(e) for e in state.get("ledger") or ()]
        raw = state.get(output_key)
        typed = None
        if raw is not None and output_type is not None:
            typed = raw if isinstance(raw, output_type) else output_type.model_validate(raw)
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(mode="json")
        status = state.get("status") or status_of(state.get("escalations") or [])
        # Built from slmgraph's own state, so it skips re-validation.
        return cls.model_construct(
            **values,
            thread_id=thread_id,
            status=status,
            output=typed,
            output_json=raw,
            message=outcome_message(state, status),
            ledger=entries,
            totals=run_totals(
                entries, prices, request=state.get(request_key),
                answer=values.get("answer") or raw or state.get("draft"), large=large,
            ),
            run_id=state.get("run_id") or None,
        )


def _escalated_answer(state: Mapping[str, Any]) -> str | None:
    """The large model's answer as the last escalated record holds it."""
    for e in reversed(state.get("escalations") or ()):
        if e.get("status") == "escalated" and e.get("answer") is not None:
            return e["answer"]
    return None


@functools.cache
def _copied(cls: type[RunResult]) -> tuple[str, ...]:
    """The result's fields that are the state's fields of the same name."""
    return tuple(k for k in cls.model_fields if k not in _DERIVED)


@functools.cache
def _factories(cls: type[RunResult]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, f.default_factory) for k, f in cls.model_fields.items()
                 if k in _copied(cls) and f.default_factory is not None)


def _reason(state: Mapping[str, Any]) -> str | None:
    """Why the run escalated: the router's field, or else the last escalation record's."""
    reason = state.get("escalation_reason")
    if reason is None and state.get("escalations"):
        reason = state["escalations"][-1].get("reason")
    return reason


def outcome_message(state: Mapping[str, Any], status: str | None = None) -> str:
    status = status or state.get("status")
    reason = _reason(state)
    if status == "answered":
        return f"answered by skill {state.get('route')!r}" if state.get("route") else "answered by the small models"
    if status == "escalated":
        return f"escalated ({reason}) and answered by the large model"
    if status == "escalation_failed":
        return f"escalated ({reason}) but the large model did not finish; the draft is kept"
    if status == "escalation_needed":
        return f"{NO_LARGE_MODEL}; reason: {reason}; the specialist's draft is kept"
    return "the run has not finished; resume it with its thread id"
