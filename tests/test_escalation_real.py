"""The whole path on real engines: embedded small model in-process, and escalation
to a real OpenAI-compatible server (llama_cpp.server serving the bundled GGUF)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    EscalationAgent,
    LlamaCppModel,
    OpenAIModel,
    Price,
    PriceTable,
    RulesRouter,
    Rule,
    Skill,
    build_graph,
)

pytestmark = [pytest.mark.embedded, pytest.mark.server]


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative"]


SENTIMENT = Skill(
    name="sentiment",
    description="rate the sentiment of a review",
    instructions="Rate the sentiment of the review.",
    output_type=Sentiment,
)


async def test_none_fits_escalates_to_a_real_openai_compatible_server(server_url, tmp_path):
    large = OpenAIModel("smollm2-served", base_url=server_url, context_window=2048)
    prices = PriceTable(prices={"smollm2-served": Price(input_per_mtok=2.5, output_per_mtok=10)}, baseline_model="smollm2-served")
    graph = build_graph(
        [SENTIMENT],
        models={"small": LlamaCppModel(), "large": large},
        router=RulesRouter([Rule("sentiment", (r"\breview\b",))]),
        escalation=EscalationAgent(max_steps=1, tools=()),
        prices=prices,
        checkpoint=tmp_path / "c.sqlite",
    )
    try:
        r = await graph.ainvoke("Write one sentence about the sea.")
    finally:
        await large.aclose()
    assert (r.status, r.route, r.escalation_reason) == ("escalated", None, "none_fits")
    assert isinstance(r.answer, str) and r.answer.strip()
    (entry,) = r.ledger
    assert (entry.node, entry.tier, entry.provider) == ("escalation", "large", "openai")
    assert entry.prompt_tokens > 0 and entry.completion_tokens > 0 and entry.cost_usd > 0
    assert r.totals.large_calls == 1 and r.totals.cost_usd == pytest.approx(entry.cost_usd)


async def test_rejected_specialist_draft_reaches_the_real_large_model(server_url, tmp_path):
    large = OpenAIModel("smollm2-served", base_url=server_url, context_window=2048)
    strict = SENTIMENT.clone(acceptance=AcceptancePolicy(max_repairs=0, check=lambda i, o: "always escalate"))
    graph = build_graph(
        [strict],
        models={"small": LlamaCppModel(), "large": large},
        escalation=EscalationAgent(max_steps=1, tools=()),
        checkpoint=tmp_path / "c.sqlite",
    )
    try:
        r = await graph.ainvoke("Review: the film was wonderful.")
    finally:
        await large.aclose()
    assert (r.status, r.escalation_reason) == ("escalated", "failed_check")
    assert r.draft in ({"sentiment": "positive"}, {"sentiment": "negative"})  # the embedded model's real draft
    assert [(e.node, e.provider) for e in r.ledger] == [("specialist", "llamacpp"), ("escalation", "openai")]
    assert r.answer
