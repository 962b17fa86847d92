"""The ledger's definitions, pinned with hand-computed numbers.

- a call's price is found by binding key, then by model name (both keyings work);
- a local call with no price costs machine time: USD per hour x the call's wall time;
- the baseline is the request sent once to the large model: request tokens in,
  answer tokens out, at the large model's price (not the small tier's calls repriced);
- saved = baseline - (small tier, local included, + large).
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmgraph import ModelReply, ModelRouter, Price, PriceTable, Rule, RulesRouter, Skill, build_graph
from slmgraph.ledger import DEFAULT_MACHINE_USD_PER_HOUR, totals
from slmgraph.models import Usage
from slmgraph.testing import ScriptedModel


class Total(BaseModel):
    total: int


ADD = Skill(name="add", description="add two numbers", instructions="Add the numbers.", output_type=Total)
LARGE_PRICE = Price(input_per_mtok=1000.0, output_per_mtok=2000.0)


def reply(text: str, model: str, prompt: int, completion: int, latency_s: float) -> ModelReply:
    return ModelReply(text=text, model=model, provider="test", usage=Usage(prompt, completion), latency_s=latency_s)


def test_a_price_is_found_by_binding_key_or_by_model_name_and_the_key_wins():
    by_key = PriceTable(prices={"large": Price(input_per_mtok=1.0)})
    by_name = PriceTable(prices={"gpt-x": Price(input_per_mtok=2.0)})
    both = PriceTable(prices={"large": Price(input_per_mtok=1.0), "gpt-x": Price(input_per_mtok=2.0)})
    cost = dict(prompt_tokens=1_000_000, completion_tokens=0, latency_s=0.0, local=False)
    assert by_key.call_cost(key="large", model="gpt-x", **cost) == pytest.approx(1.0)
    assert by_name.call_cost(key="large", model="gpt-x", **cost) == pytest.approx(2.0)
    assert both.call_cost(key="large", model="gpt-x", **cost) == pytest.approx(1.0)
    assert by_key.baseline().input_per_mtok == 1.0
    assert by_name.baseline("gpt-x").input_per_mtok == 2.0  # the large model's name
    assert by_name.baseline().input_per_mtok == 0.0  # no large entry at all: zero


def test_a_local_call_without_a_price_costs_machine_time():
    table = PriceTable(machine_usd_per_hour=0.36)
    # 0.36 USD/h x 10 s = 0.001 USD, whatever the tokens
    assert table.call_cost(key="small", model="m", prompt_tokens=9, completion_tokens=9, latency_s=10.0, local=True) == (
        pytest.approx(0.001)
    )
    # a remote model without an entry costs the default (zero), not machine time
    assert table.call_cost(key="small", model="m", prompt_tokens=9, completion_tokens=9, latency_s=10.0, local=False) == 0
    # a local model with its own entry costs that entry, not machine time as well
    priced = PriceTable(prices={"small": Price(per_call_usd=0.5)}, machine_usd_per_hour=0.36)
    assert priced.call_cost(key="small", model="m", prompt_tokens=1, completion_tokens=1, latency_s=10.0, local=True) == 0.5
    assert PriceTable().machine_usd_per_hour == DEFAULT_MACHINE_USD_PER_HOUR == 0.10


@pytest.mark.parametrize("keying", ["binding key", "model name"])
async def test_an_answered_run_costs_machine_time_and_saves_the_direct_large_call(keying):
    # The small model is local: 36 s of wall time at 0.10 USD/h is 0.001 USD.
    small = ScriptedModel([reply('{"total": 5}', "tiny", 100, 10, 36.0)], name="tiny")
    large = ScriptedModel([], name="big", local=False)
    prices = PriceTable(prices={"large" if keying == "binding key" else "big": LARGE_PRICE})
    g = build_graph(
        [ADD], models={"small": small, "large": large}, prices=prices, checkpoint=None,
        router=RulesRouter([Rule("add", (r"\+",))]), harden=False,
    )  # fmt: skip
    r = await g.ainvoke("2 + 3")
    assert r.status == "answered" and r.answer == '{"total":5}'
    t = r.totals
    (entry,) = r.ledger
    assert entry.local and entry.key == "small" and entry.cost_usd == pytest.approx(0.001)
    assert t.small_cost_usd == pytest.approx(0.001) == t.local_cost_usd and t.large_cost_usd == 0
    # baseline: "2 + 3" is 2 tokens in, '{"total":5}' (11 bytes) is 4 tokens out
    assert (t.baseline_prompt_tokens, t.baseline_completion_tokens) == (2, 4)
    assert t.baseline_usd == pytest.approx((2 * 1000 + 4 * 2000) / 1e6)  # 0.01
    assert t.saved_usd == pytest.approx(0.01 - 0.001)


@pytest.mark.parametrize("keying", ["binding key", "model name"])
async def test_an_escalated_run_is_compared_with_one_direct_call_not_its_small_calls(keying):
    # Router: 3 samples without logprobs (10+1 tokens each, 3.6 s each), agreeing on "add".
    router_model = ScriptedModel([reply('{"skill": "add"}', "tiny", 10, 1, 3.6)] * 3, name="tiny")
    # Specialist: invalid output three times (1 try + 2 repairs), 20+2 tokens and 7.2 s each.
    router_model.push(*[reply('{"total": "x"}', "tiny", 20, 2, 7.2)] * 3)
    large = ScriptedModel([reply('{"action": "final", "answer": "5"}', "big", 300, 20, 1.0)], name="big", local=False)
    prices = PriceTable(prices={"large" if keying == "binding key" else "big": LARGE_PRICE})
    g = build_graph(
        [ADD], models={"small": router_model, "large": large}, prices=prices, checkpoint=None,
        router=ModelRouter(samples=3), harden=False,
    )  # fmt: skip
    r = await g.ainvoke("2 + 3")
    assert r.status == "escalated" and r.answer == "5"
    t = r.totals
    assert (t.small_calls, t.large_calls) == (6, 1)
    # small tier: 3 x 3.6 s + 3 x 7.2 s = 32.4 s at 0.10 USD/h = 0.0009 USD
    assert t.small_cost_usd == pytest.approx(0.0009) == t.local_cost_usd
    # large: 300 in, 20 out at 1000/2000 USD per Mtok = 0.3 + 0.04
    assert t.large_cost_usd == pytest.approx(0.34)
    assert t.cost_usd == pytest.approx(0.3409)
    # baseline: "2 + 3" (2 tokens) in, "5" (1 token) out, once: 0.004 USD, where
    # repricing every call would have given (30+60+300) in and (3+6+20) out
    assert (t.baseline_prompt_tokens, t.baseline_completion_tokens) == (2, 1)
    assert t.baseline_usd == pytest.approx(0.004)
    assert t.saved_usd == pytest.approx(0.004 - (0.0009 + 0.34))


def test_totals_of_a_ledger_by_hand():
    entries = [
        {"node": "router", "model": "tiny", "provider": "test", "tier": "small", "cost_usd": 0.25, "local": True},
        {"node": "escalation", "model": "big", "provider": "test", "tier": "large", "cost_usd": 1.0},
    ]
    t = totals(entries, PriceTable(prices={"large": Price(input_per_mtok=1e6)}), request_tokens=2, answer_tokens=7)
    assert (t.small_cost_usd, t.large_cost_usd, t.local_cost_usd, t.cost_usd) == (0.25, 1.0, 0.25, 1.25)
    assert t.baseline_usd == pytest.approx(2.0) and t.saved_usd == pytest.approx(0.75)
