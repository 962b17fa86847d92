"""The transaction review graph: a whole log in, flagged rows with reasons out.

The request is the log text (CSV with a header, or JSON lines). The
``flag_transactions`` skill runs its rules over every row and has the small model
judge the rows they pick, in batches that fit its context. Rows the small model
cannot settle escalate: the large model is shown only those rows (with their rules,
the small model's verdict and the account context), never the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._context import DEFAULT_REPLY_RESERVE, RunContext
from ..agents._escalation import EscalationAgent, EscalationResult
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._skill import Skill
from ..skills._transaction_rules import TransactionRules
from ..skills._transactions import flag_transactions_skill
from ._graph import SLMGraph, build_graph

__all__ = ["transaction_review_graph", "TransactionEscalation"]

_REVIEW_INSTRUCTIONS = (
    "You are a senior fraud analyst. Automatic rules and a small model reviewed a transaction log; the rows "
    "below are the ones they could not settle. For each row say whether it is suspicious or benign and why, "
    "in one line per row (give its line number). Be concise."
)


class TransactionEscalation(EscalationAgent):
    """The escalation step of the review: the large model sees the escalated rows
    (as many as fit its context window, the rest counted), not the whole log.

    Args:
        model: binding key of the large model.
        max_steps: model calls allowed.
    """

    def __init__(self, model: str = "large", *, max_steps: int = 4) -> None:
        super().__init__(model, max_steps=max_steps, tools=(), instructions=_REVIEW_INSTRUCTIONS)

    async def run(
        self, request: str, *, draft: Any, reason: str, detail: str, skills: Mapping[str, Skill], ctx: RunContext,
    ) -> EscalationResult:
        budget = ctx.model(self.model).context_window - DEFAULT_REPLY_RESERVE - 512
        brief, summary = _brief(request, draft, ctx.model(self.model), budget)
        return await super().run(brief, draft=summary, reason=reason, detail=detail, skills=skills, ctx=ctx)


def _brief(request: str, draft: Any, model: Model, budget: int) -> tuple[str, Any]:
    """The request the large model sees, and the summary passed as its draft."""
    used = 0
    if isinstance(draft, dict) and isinstance(draft.get("escalated"), list):
        rows, lines = draft["escalated"], []
        for row in rows:
            text = json.dumps({k: row.get(k) for k in ("line", "id", "timestamp", "account", "payee", "amount",
                                                         "currency", "country", "rules", "verdict", "model_reason",
                                                         "escalation_detail", "context")}, ensure_ascii=False)
            used += model.count_tokens(text) + 1
            if used > budget:
                lines.append(f"... and {len(rows) - len(lines)} more escalated rows not shown (context window)")
                break
            lines.append(text)
        summary = {k: draft.get(k) for k in ("format", "lines", "transactions", "rule_hits", "judged")}
        summary["flagged_lines"] = [r.get("line") for r in draft.get("flagged", [])]
        summary["malformed_lines"] = len(draft.get("malformed", []))
        return "Escalated transactions, one JSON object per line:\n" + "\n".join(lines), summary
    # no report (e.g. the log could not be read): show its head
    kept = []
    for line in request.splitlines():
        used += model.count_tokens(line) + 1
        if used > budget:
            kept.append(f"... ({len(request.splitlines()) - len(kept)} more lines not shown)")
            break
        kept.append(line)
    return "\n".join(kept), draft


def transaction_review_graph(
    models: Mapping[str, Model],
    *,
    config: Config | None = None,
    prices: PriceTable | None = None,
    rules: TransactionRules | None = None,
    samples: int = 3,
) -> SLMGraph:
    """Review a transaction log (the request: CSV or JSON lines text).

    The answer lists the flagged rows with their reasons, the rows that escalated
    and the malformed lines; ``result.output`` (or ``result.draft`` when rows
    escalated) is the full :class:`~slmgraph.skills.TransactionReport`.
    """
    cfg = config or Config()
    # The one skill batches the log itself, so the graph does not probe the whole
    # request against the small model's window.
    return build_graph(
        [flag_transactions_skill(rules=rules, samples=samples)],
        models=models,
        route_threshold=cfg.route_threshold,
        escalation=TransactionEscalation(max_steps=cfg.max_steps),
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="transaction_review",
    )
