"""The root of the exception tree (drawn in :mod:`slmgraph._errors`)."""

from __future__ import annotations

__all__ = ["SlmGraphError"]


class SlmGraphError(Exception):
    """Root of every error slmgraph raises.

    Attributes:
        transient: a retry may succeed (unreachable, timeout, 429, 5xx).
        ledger: when raised inside a graph node, the ledger entries of the model
            calls that node made before failing (they cost tokens too).
        thread_id, run_id: when a graph run failed with it, which run that was
            (resume it with ``graph.aresume(thread_id)``).
    """

    transient: bool = False
    ledger: list[dict] = []
    thread_id: str | None = None
    run_id: str | None = None
