"""Whether the graph's state declares the fields a node writes.

LangGraph keeps only the keys its state schema declares and drops the rest of a
node's update without a word, so a skill node in a state without slmgraph's fields
would lose its ledger entries. Each node checks, on every call, the channels of
the graph it runs in, and raises :class:`~slmgraph.StateSchemaError` instead.

The channels come from the state reader LangGraph puts in every task's config
(``functools.partial(local_read, scratchpad, channels, ...)``, as LangGraph's own
``ToolNode`` reads it for its ``Send`` tasks). A node fed by a ``Send`` payload sees
only the payload as its state, so the config is the one place that knows the graph.
A node called outside a graph run is not checked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from langgraph.channels.base import BaseChannel

from .._errors import StateSchemaError

__all__ = ["graph_channels", "require_fields", "SLM_MIXIN", "GRAPH_MIXIN"]

#: How to add slmgraph's fields to a state of your own.
SLM_MIXIN = (
    "inherit slmgraph's fields in your state: `class MyState(slmgraph.SLMState)` for a TypedDict, "
    "`class MyState(slmgraph.SLMStateModel)` for a pydantic model"
)
GRAPH_MIXIN = "use `slmgraph.GraphState` as the state, or inherit it: `class MyState(slmgraph.GraphState)`"

_READ = "__pregel_read"  # LangGraph's key for the task's state reader


def graph_channels(config: Mapping[str, Any] | None) -> Collection[str] | None:
    """The state channels of the graph running the task with ``config``, or ``None``
    when the config does not carry LangGraph's reader (a direct call)."""
    read = ((config or {}).get("configurable") or {}).get(_READ)
    for arg in getattr(read, "args", ()):
        # (A plain dict first: an isinstance check against Mapping is slow, and this
        # runs on every node call.)
        if (type(arg) is dict or isinstance(arg, Mapping)) and arg and isinstance(next(iter(arg.values())), BaseChannel):
            return arg
    return None


def require_fields(
    node: str, config: Mapping[str, Any] | None, fields: Iterable[str], fix: str = SLM_MIXIN,
    own: Iterable[str] = (),
) -> None:
    """Raise :class:`StateSchemaError` if the graph's state lacks any of ``fields``
    (slmgraph's, fixed as ``fix`` says) or of ``own`` (keys the user named, which
    the user's state must declare itself)."""
    channels = graph_channels(config)
    if channels is None:
        return
    for f in fields:
        if f not in channels:
            break
    else:
        for f in own:
            if f not in channels:
                break
        else:
            return
    missing = [f for f in fields if f not in channels]
    missing_own = [f for f in own if f not in channels]
    node = ((config or {}).get("metadata") or {}).get("langgraph_node") or node  # the name it was added under
    fixes = []
    if missing:
        fixes.append(fix)
    if missing_own:
        fixes.append(f"declare {', '.join(repr(f) for f in missing_own)} in your state")
    raise StateSchemaError(node, [*missing, *missing_own], "; and ".join(fixes))
