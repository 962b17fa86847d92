"""The ledger: one entry per model call, and what routing saved.

Each entry records which node and skill made the call, the binding key it used,
which model and provider answered, the tokens both ways, latency and cost.

What a call costs (:meth:`PriceTable.call_cost`):

- a model with an entry in :attr:`PriceTable.prices` costs that :class:`Price`.
  An entry is found by the call's **binding key** (``"large"``, ``"small"``,
  ``"coder"``) first, then by the **model name** that answered (``"gpt-4o-mini"``);
  both keyings work, and a key beats a name;
- a local model (its calls stay on this machine) with no entry costs machine time:
  :attr:`PriceTable.machine_usd_per_hour` times the call's wall time;
- any other model with no entry costs :attr:`PriceTable.default` (zero).

What a run is compared with (:func:`totals`): the **baseline** is the request sent
once, directly, to the large model: the request's tokens in and the answer's
tokens out, at the large model's price (:meth:`PriceTable.baseline`). It is not the
small tier's calls repriced: router samples, confidence samples and repairs are
what slmgraph spends, not what a direct call would. **Saved** is the baseline minus
everything the run spent: the small tier (local machine time included) plus the
large model's calls. It is negative when a run escalated after small-tier work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, NonNegativeFloat, computed_field

from .models._base import ModelReply, estimate_tokens

if TYPE_CHECKING:
    from .models._base import Model

__all__ = [
    "Price", "PriceTable", "LedgerEntry", "RunTotals", "Recorder", "totals", "run_totals",
    "DEFAULT_MACHINE_USD_PER_HOUR",
]  # fmt: skip

#: What an hour of this machine costs, charged for local calls with no price entry:
#: about the on-demand price of a 2-vCPU cloud VM, the class of machine the
#: embedded engine and a small Ollama model run on. Set
#: ``PriceTable(machine_usd_per_hour=...)`` to your machine's cost (a GPU server is
#: nearer 1 USD an hour; 0 leaves local calls free).
DEFAULT_MACHINE_USD_PER_HOUR = 0.10


class Price(BaseModel):
    """USD per million tokens, plus an optional flat fee per call (``per_call_usd``)."""

    input_per_mtok: NonNegativeFloat = 0.0
    output_per_mtok: NonNegativeFloat = 0.0
    per_call_usd: NonNegativeFloat = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        tokens = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return tokens + self.per_call_usd


class PriceTable(BaseModel):
    """Prices by binding key or by model name (see the module docstring).

    Attributes:
        prices: :class:`Price` by binding key (``"large"``) or model name
            (``"gpt-4o-mini"``); a key's entry wins.
        default: the price of a remote model with no entry (zero).
        baseline_model: the binding key or model name whose price answers "what if
            the request had gone straight to the large model?"; ``None`` means the
            ``"large"`` key, then the large model's name.
        machine_usd_per_hour: the price of local inference, per hour of a call's
            wall time (default :data:`DEFAULT_MACHINE_USD_PER_HOUR`).
    """

    prices: dict[str, Price] = Field(default_factory=dict)
    default: Price = Field(default_factory=Price)
    baseline_model: str | None = None
    machine_usd_per_hour: NonNegativeFloat = DEFAULT_MACHINE_USD_PER_HOUR

    def find(self, key: str | None, model: str | None = None) -> Price | None:
        """The entry for binding ``key``, else for ``model``'s name, else ``None``."""
        for name in (key, model):
            if name is not None and name in self.prices:
                return self.prices[name]
        return None

    def price(self, key: str, model: str | None = None) -> Price:
        """The entry for ``key`` (or ``model``), else :attr:`default`."""
        return self.find(key, model) or self.default

    def call_cost(
        self,
        *,
        key: str | None,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        local: bool,
    ) -> float:
        """USD for one call: its price entry, or machine time when local, or the default."""
        entry = self.find(key, model)
        if entry is not None:
            return entry.cost(prompt_tokens, completion_tokens)
        if local:
            return self.machine_usd_per_hour * max(0.0, latency_s) / 3600.0
        return self.default.cost(prompt_tokens, completion_tokens)

    def baseline(self, large_model: str | None = None) -> Price:
        """The large model's price: :attr:`baseline_model`'s entry (key or name),
        else the ``"large"`` key's, else ``large_model``'s name's, else the default."""
        if self.baseline_model is not None:
            return self.price(self.baseline_model, large_model)
        return self.price("large", large_model)


class LedgerEntry(BaseModel):
    """One model call.

    Attributes:
        key: the binding key the call used (``"small"``, ``"large"``, ...).
        local: whether the call stayed on this machine (then an unlisted model's
            cost is machine time).
    """

    node: str
    skill: str | None = None
    model: str
    provider: str
    tier: Literal["small", "large"] = "small"
    key: str | None = None
    local: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    escalation_reason: str | None = None


class RunTotals(BaseModel):
    """Per-run sums, beside the baseline of one direct call to the large model.

    Attributes:
        small_cost_usd: the small tier's calls, local machine time included.
        large_cost_usd: the large model's calls.
        local_cost_usd: the part of the cost spent on local calls.
        cost_usd: everything the run spent (``small_cost_usd + large_cost_usd``).
        baseline_prompt_tokens, baseline_completion_tokens: the request's and the
            answer's tokens, as one direct call to the large model would count them.
        baseline_usd: that direct call at the large model's price.
        saved_usd: ``baseline_usd - cost_usd``.
    """

    calls: int = 0
    small_calls: int = 0
    large_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    small_cost_usd: float = 0.0
    large_cost_usd: float = 0.0
    local_cost_usd: float = 0.0
    cost_usd: float = 0.0
    baseline_prompt_tokens: int = 0
    baseline_completion_tokens: int = 0
    baseline_usd: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def saved_usd(self) -> float:
        return self.baseline_usd - (self.small_cost_usd + self.large_cost_usd)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def all_large_cost_usd(self) -> float:
        """The older name of :attr:`baseline_usd`."""
        return self.baseline_usd


#: The table used when none is given: nothing priced.
_NO_PRICES = PriceTable()


def totals(
    entries: Iterable[LedgerEntry | Mapping],
    prices: PriceTable | None = None,
    *,
    request_tokens: int = 0,
    answer_tokens: int = 0,
    large_model: str | None = None,
) -> RunTotals:
    """Sum ``entries`` and price the baseline.

    Args:
        entries: the run's ledger.
        prices: gives the baseline's price (zero without one).
        request_tokens, answer_tokens: the baseline call's tokens in and out.
        large_model: the large model's name, for a price keyed by name.
    """
    table = prices or _NO_PRICES
    calls = small = large = prompt = completion = 0
    latency = small_usd = large_usd = local_usd = 0.0
    for raw in entries:
        e = raw if isinstance(raw, LedgerEntry) else LedgerEntry.model_validate(raw)
        calls += 1
        if e.tier == "large":
            large += 1
            large_usd += e.cost_usd
        else:
            small += 1
            small_usd += e.cost_usd
        if e.local:
            local_usd += e.cost_usd
        prompt += e.prompt_tokens
        completion += e.completion_tokens
        latency += e.latency_s
    return RunTotals(
        calls=calls, small_calls=small, large_calls=large, prompt_tokens=prompt, completion_tokens=completion,
        latency_s=latency, small_cost_usd=small_usd, large_cost_usd=large_usd, local_cost_usd=local_usd,
        cost_usd=small_usd + large_usd, baseline_prompt_tokens=request_tokens,
        baseline_completion_tokens=answer_tokens, baseline_usd=table.baseline(large_model).cost(request_tokens, answer_tokens),
    )


def run_totals(
    entries: Iterable[LedgerEntry | Mapping],
    prices: PriceTable | None,
    *,
    request: Any,
    answer: Any,
    large: Model | None = None,
) -> RunTotals:
    """:func:`totals` of one run, its baseline counted from the run's ``request`` and
    ``answer`` (text, or any JSON value) with the large model's tokenizer when one is
    bound (``large``), else slmgraph's estimate (one token per 3 bytes)."""
    count = large.count_tokens if large is not None else estimate_tokens

    def tokens(value: Any) -> int:
        if value is None or value == "":
            return 0
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        return count(text)

    return totals(
        entries, prices, request_tokens=tokens(request), answer_tokens=tokens(answer),
        large_model=large.name if large is not None else None,
    )  # fmt: skip


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
        key: str | None = None,
        local: bool = False,
    ) -> None:
        u = reply.usage
        cost = self.prices.call_cost(
            key=key, model=reply.model, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
            latency_s=reply.latency_s, local=local,
        )  # fmt: skip
        self.entries.append(
            {
                "node": node,
                "skill": skill,
                "model": reply.model,
                "provider": reply.provider,
                "tier": tier,
                "key": key,
                "local": local,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "latency_s": reply.latency_s,
                "cost_usd": cost,
                "escalation_reason": reason,
            }
        )

    def dump(self) -> list[dict]:
        return list(self.entries)
