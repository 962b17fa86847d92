"""slmgraph's state fields, their reducers, and the routed graph's typed state.

State values stay plain JSON (dicts, lists, strings) plus langchain-core messages,
so every checkpoint serialises without custom types; the typed views are
:meth:`~slmgraph.graphs.SkillNode.read` and :class:`~slmgraph.RunResult`.

Add slmgraph's fields to a state of your own by inheriting the mixin::

    class MyState(SLMState):            # a TypedDict (total=False)
        contract: str
        clauses: dict | None

    class MyModelState(SLMStateModel):  # or a pydantic state
        contract: str = ""

A node of slmgraph's in a state without these fields (or without the output key
it was given) raises :class:`~slmgraph.StateSchemaError` on its first call, where
LangGraph would drop its writes silently.

Each field's reducer is declared once, here: ``ledger`` and ``escalations``
append what nodes write, and a node that starts a run writes :data:`NEW_RUN`
first, which clears what the thread's earlier runs left (:func:`run_reset`).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict  # pydantic needs it for JSON schemas on 3.11

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field

__all__ = [
    "SLMState", "SLMStateModel", "GraphState", "Status", "NO_LARGE_MODEL", "NEW_RUN",
    "add_run_list", "run_reset", "new_run", "status_of", "RunResult",
]

#: Where a run ended.
#: ``answered``: a specialist's answer was accepted.
#: ``escalated``: the large model answered.
#: ``escalation_needed``: the request needs the large model but none is configured.
#: ``escalation_failed``: the large model could not finish (e.g. its step budget ran out).
Status = Literal["running", "answered", "escalated", "escalation_needed", "escalation_failed"]

NO_LARGE_MODEL = "escalation needed; no large model configured"

#: Written first into a run-scoped list by the node that starts a run: the reducer
#: then drops what earlier runs on the thread left.
NEW_RUN = "__new_run__"


def add_run_list(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append a node's entries; a write that begins with :data:`NEW_RUN` starts afresh."""
    if right and right[0] == NEW_RUN:
        return list(right[1:])
    if not right:
        return left if left is not None else []
    return [*(left or []), *right]


class SLMState(TypedDict, total=False):
    """slmgraph's fields, to mix into a TypedDict state of your own.

    Attributes:
        ledger: one entry per model call of this run (see :class:`~slmgraph.LedgerEntry`).
        escalations: one record per rejected sub-task of this run: ``node``,
            ``skill``, ``reason``, ``detail``, ``draft`` and ``status`` (``escalated``,
            ``escalation_needed``, ``escalation_failed``, or ``rejected`` when it
            was handed to another node); an escalation node's ``escalated``
            record also holds the large model's ``answer``.
        run_id: the id of the run in the durable runs table (empty outside one).
    """

    ledger: Annotated[list[dict[str, Any]], add_run_list]
    escalations: Annotated[list[dict[str, Any]], add_run_list]
    run_id: str


class SLMStateModel(BaseModel):
    """slmgraph's fields, to mix into a pydantic state of your own (same reducers)."""

    ledger: Annotated[list[dict[str, Any]], add_run_list] = Field(default_factory=list)
    escalations: Annotated[list[dict[str, Any]], add_run_list] = Field(default_factory=list)
    run_id: str = ""


class GraphState(SLMState, total=False):
    """State of the routed graph (:func:`~slmgraph.build_graph`) and the ready graphs.

    ``request`` and ``messages`` (the conversation) last across the runs on a
    thread; every other field belongs to one run and is reset when it starts.
    """

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
    error: str | None


#: Fields that outlive a run: its input, the conversation, and the run's id (set by the input).
THREAD_FIELDS = frozenset({"request", "messages", "run_id"})

_DEFAULTS: dict[str, Any] = {"status": "running", "tool_calls": []}


def _reducer(hint: Any) -> Any:
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if callable(meta):
                return meta
    return None


def run_reset(schema: type = SLMState, *, keep: frozenset[str] = THREAD_FIELDS, lists_only: bool = False) -> dict[str, Any]:
    """The update that starts a run on a state of type ``schema``.

    Run-scoped lists (reducer :func:`add_run_list`) get :data:`NEW_RUN`; plain
    fields get their empty value (unless ``lists_only``: a state of your own keeps
    its input fields); fields in ``keep`` and fields with any other reducer (e.g.
    ``messages``) are left alone. The lists in the result are shared: copy before
    mutating.
    """
    hints = typing.get_type_hints(schema, include_extras=True)
    out: dict[str, Any] = {}
    for name, hint in hints.items():
        if name in keep:
            continue
        reducer = _reducer(hint)
        if reducer is add_run_list:
            out[name] = [NEW_RUN]
        elif reducer is None and not lists_only:
            out[name] = _DEFAULTS.get(name)
    return out


def new_run(request: Any, run_id: str = "") -> dict[str, Any]:
    """The input of a new run: the request and its run id. The graph's first node
    clears what earlier runs left (see :func:`run_reset`)."""
    return {"request": request, "run_id": run_id}


def status_of(escalations: list[dict[str, Any]]) -> Status:
    """A run's status from its escalation records, for states without ``status``."""
    seen = {e.get("status") for e in escalations}
    for status in ("escalation_needed", "escalation_failed", "escalated"):
        if status in seen:
            return status  # type: ignore[return-value]
    return "answered"


# The result type is derived from this state; it lives in _result and is re-exported
# here for the modules that import it from the state.
from ._result import RunResult  # noqa: E402
