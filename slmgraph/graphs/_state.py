"""The typed graph state and the typed result of a run.

State values stay plain JSON (dicts, lists, strings) plus langchain-core messages,
so every checkpoint serialises without custom types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from typing_extensions import TypedDict  # pydantic needs it for JSON schemas on 3.11

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field

from ..ledger import LedgerEntry, RunTotals

__all__ = ["GraphState", "RunResult", "Status", "NO_LARGE_MODEL", "new_run"]

#: Where a run ended.
#: ``answered``: a specialist's answer was accepted.
#: ``escalated``: the large model answered.
#: ``escalation_needed``: the request needs the large model but none is configured.
#: ``escalation_failed``: the large model could not finish (e.g. its step budget ran out).
Status = Literal["running", "answered", "escalated", "escalation_needed", "escalation_failed"]

NO_LARGE_MODEL = "escalation needed; no large model configured"

_NEW_RUN = "__new_run__"


def add_ledger(left: list[dict[str, Any]] | None, right: list[Any] | None) -> list[dict[str, Any]]:
    """Append a node's ledger entries; a new run on the thread starts a fresh ledger."""
    if right and right[0] == _NEW_RUN:
        return list(right[1:])
    return [*(left or []), *(right or [])]


class GraphState(TypedDict, total=False):
    """State of one slmgraph run (one LangGraph thread)."""

    request: str
    messages: Annotated[list[AnyMessage], add_messages]
    route: str | None
    route_confidence: float | None
    output: dict[str, Any] | None
    draft: Any
    confidence: float | None
    escalation_reason: str | None
    escalation_detail: str | None
    tool_calls: list[dict[str, Any]]
    answer: str | None
    status: Status
    ledger: Annotated[list[dict[str, Any]], add_ledger]
    run_id: str
    error: str | None


def new_run(request: str, run_id: str = "") -> GraphState:
    """The input of a new run: the request, and every per-run field cleared, so a
    thread that already ran keeps its conversation (``messages``) but nothing else."""
    return {
        "request": request,
        "route": None,
        "route_confidence": None,
        "output": None,
        "draft": None,
        "confidence": None,
        "escalation_reason": None,
        "escalation_detail": None,
        "tool_calls": [],
        "answer": None,
        "status": "running",
        "ledger": [_NEW_RUN],
        "run_id": run_id,
        "error": None,
    }


class RunResult(BaseModel):
    """The outcome of one run, read from the final graph state.

    Attributes:
        answer: the final answer as text (the accepted output as JSON, or the
            large model's answer); ``None`` when escalation was needed but missing.
        output: the accepted specialist output, when a skill answered.
        draft: the specialist's draft when the request escalated; kept even when
            no large model is configured.
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
    output: dict[str, Any] | None = None
    confidence: float | None = None
    draft: Any = None
    escalation_reason: str | None = None
    escalation_detail: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    message: str = ""
    ledger: list[LedgerEntry] = Field(default_factory=list)
    totals: RunTotals = Field(default_factory=RunTotals)
    run_id: str | None = None
    error: str | None = None
