"""The ledger: one entry per model call, and what routing saved.

Each entry records which node and skill made the call, which model and provider
answered, the tokens both ways, latency and cost. :func:`totals` sums a run and
prices the same tokens as if every call had gone to the large model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, NonNegativeFloat, computed_field

from .models._base import ModelReply

__all__ = ["Price", "PriceTable", "LedgerEntry", "RunTotals", "Recorder", "totals"]


class Price(BaseModel):
    """USD per million tokens, plus an optional flat fee per call (``per_call_usd``)."""

    input_per_mtok: NonNegativeFloat = 0.0
    output_per_mtok: NonNegativeFloat = 0.0
    per_call_usd: NonNegativeFloat = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        tokens = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return tokens + self.per_call_usd


class PriceTable(BaseModel):
    """Prices by model name. Models not listed cost ``default`` (zero: local models).

    Attributes:
        baseline_model: the model whose price answers "what if every call had gone
            to the large model?"; usually the escalation model.
    """

    prices: dict[str, Price] = Field(default_factory=dict)
    default: Price = Field(default_factory=Price)
    baseline_model: str | None = None

    def price(self, model: str) -> Price:
        return self.prices.get(model, self.default)

    def baseline(self) -> Price:
        return self.price(self.baseline_model) if self.baseline_model else self.default


class LedgerEntry(BaseModel):
    """One model call."""

    node: str
    skill: str | None = None
    model: str
    provider: str
    tier: Literal["small", "large"] = "small"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    escalation_reason: str | None = None


class RunTotals(BaseModel):
    """Per-run sums, beside the all-on-the-large-model baseline."""

    calls: int = 0
    small_calls: int = 0
    large_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    all_large_cost_usd: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def saved_usd(self) -> float:
        return self.all_large_cost_usd - self.cost_usd


def totals(entries: Iterable[LedgerEntry | Mapping], prices: PriceTable | None = None) -> RunTotals:
    """Sum ``entries``; ``prices`` gives the baseline (defaults to zero)."""
    base = (prices or PriceTable()).baseline()
    out = RunTotals()
    for raw in entries:
        e = raw if isinstance(raw, LedgerEntry) else LedgerEntry.model_validate(raw)
        out.calls += 1
        if e.tier == "large":
            out.large_calls += 1
        else:
            out.small_calls += 1
        out.prompt_tokens += e.prompt_tokens
        out.completion_tokens += e.completion_tokens
        out.latency_s += e.latency_s
        out.cost_usd += e.cost_usd
        out.all_large_cost_usd += base.cost(e.prompt_tokens, e.completion_tokens)
    return out


@dataclass(slots=True)
class Recorder:
    """Collects the ledger entries (as plain dicts, the form the graph state holds)
    for the calls made inside one node."""

    prices: PriceTable = field(default_factory=PriceTable)
    entries: list[dict] = field(default_factory=list)

    def add(
        self,
        reply: ModelReply,
        *,
        node: str,
        skill: str | None = None,
        reason: str | None = None,
        tier: Literal["small", "large"] = "small",
    ) -> None:
        u = reply.usage
        self.entries.append(
            {
                "node": node,
                "skill": skill,
                "model": reply.model,
                "provider": reply.provider,
                "tier": tier,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "latency_s": reply.latency_s,
                "cost_usd": self.prices.price(reply.model).cost(u.prompt_tokens, u.completion_tokens),
                "escalation_reason": reason,
            }
        )

    def dump(self) -> list[dict]:
        return list(self.entries)
