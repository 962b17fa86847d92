"""A stand-in small tier for tests and benchmarks of the learning loop."""

from __future__ import annotations

from typing import Any

__all__ = ["first_candidate_model"]


def first_candidate_model(new_label: str = "new_topic", *, name: str = "first-candidate") -> Any:
    """A small model that picks the first (best-retrieved) candidate a classify skill
    offers, and names a new topic ``new_label``: the classify skill then answers
    with its best-ranked label, deterministically and instantly. A
    :class:`~slmgraph.testing.FunctionModel` (imported on use: product modules
    never import the test kit)."""
    from ..testing import FunctionModel

    def reply(_messages: Any, schema: dict[str, Any] | None) -> Any:
        enum = ((schema or {}).get("properties", {}).get("label") or {}).get("enum")
        if enum:
            return {"label": enum[0]}
        return {"label": new_label}

    return FunctionModel(reply, name=name)
