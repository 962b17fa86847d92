"""The contract review graph: find the clauses of a contract, each quoted verbatim
with its character offsets, on a small model; escalate when a quote cannot be
verified."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..agents._escalation import EscalationAgent
from ..agents._router import RulesRouter
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._extract import DEFAULT_CLAUSE_TYPES, extract_skill
from ._graph import SLMGraph, build_graph

__all__ = ["contract_review_graph"]

_ESCALATION = (
    "You review contracts. A small model could not find the requested clauses reliably. "
    "List each clause of the requested types with its type and an exact quote copied "
    "character for character from the contract; never paraphrase a quote. You may call "
    "the extract skill on part of the contract."
)


def contract_review_graph(
    models: Mapping[str, Model],
    *,
    config: Config | None = None,
    prices: PriceTable | None = None,
    clause_types: Sequence[str] | None = None,
) -> SLMGraph:
    """One skill, ``extract``: the request is the contract text; the answer lists
    each clause found as ``type [start:end]: quote``, and ``output`` holds the
    typed :class:`~slmgraph.skills.Extraction`.

    Contracts longer than the small model's context window are split into
    overlapping chunks inside the skill. A quote that does not occur verbatim is
    re-asked once and then escalates (``failed_check``), with only the verified
    clauses kept in the draft.
    """
    cfg = config or Config()
    skill = extract_skill(tuple(clause_types) if clause_types else DEFAULT_CLAUSE_TYPES)
    graph = build_graph(
        [skill],
        models=models,
        router=RulesRouter([], default=skill.name),
        route_threshold=cfg.route_threshold,
        escalation=EscalationAgent(max_steps=cfg.max_steps, instructions=_ESCALATION),
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="contract_review",
    )
    return graph
