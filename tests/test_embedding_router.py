"""EmbeddingRouter: labels by similarity to examples, a fitted "none fits" rule, and use in a graph."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmgraph import ConfigError, Skill, build_graph
from slmgraph.agents import EmbeddingRouter
from slmgraph.models import HashingEmbedder
from slmgraph.testing import ScriptedModel

EXAMPLES = [
    ("my card has not arrived in the post", "card"),
    ("when will my new card be delivered", "card"),
    ("the card I ordered never came", "card"),
    ("I want a refund for this order", "refund"),
    ("please give me my money back for the purchase", "refund"),
    ("how do I get a refund", "refund"),
]


async def test_choose_scores_labels_and_says_none_below_the_threshold():
    router = EmbeddingRouter(EXAMPLES, HashingEmbedder(), scoring="nearest", margin_weight=0.0, threshold=0.0)
    choice = await router.choose("my new card has not been delivered")
    assert choice.label == "card" and choice.top == "card" and choice.score > 0.3
    strict = EmbeddingRouter(EXAMPLES, HashingEmbedder(), scoring="nearest", margin_weight=0.0, threshold=0.99)
    none = await strict.choose("my new card has not been delivered")
    assert none.label is None and none.top == "card"


async def test_fit_learns_a_threshold_that_rejects_out_of_scope_requests():
    router = EmbeddingRouter(EXAMPLES, HashingEmbedder())
    fit_x = ["my card still has not arrived", "refund my purchase please", "what is the weather like today",
             "tell me a joke about cats", "card delivery is late", "I would like a refund"]
    fit_y = ["card", "refund", None, None, "card", "refund"]
    accuracy = await router.fit(fit_x, fit_y)
    assert accuracy == 1.0
    picks = [c.label for c in await router.choose_many(fit_x)]
    assert picks == fit_y
    assert router.rule.fitted_on == "validation" and router.rule.min_similarity > 0


async def test_fit_of_the_retrieval_scorings_picks_scoring_margin_and_threshold():
    router = EmbeddingRouter(EXAMPLES, HashingEmbedder(), scoring="centroid")
    fit_x = ["my card still has not arrived", "refund my purchase please", "what is the weather like today",
             "tell me a joke about cats", "card delivery is late", "I would like a refund"]
    fit_y = ["card", "refund", None, None, "card", "refund"]
    assert await router.fit(fit_x, fit_y) == 1.0
    assert [c.label for c in await router.choose_many(fit_x)] == fit_y
    assert router.scoring in ("centroid", "nearest", "top3") and router.threshold > 0


async def test_in_a_graph_none_fits_escalates():
    class Out(BaseModel):
        ok: bool

    skills = [Skill(name=n, description=n, instructions="x", output_type=Out) for n in ("card", "refund")]
    router = EmbeddingRouter(EXAMPLES, HashingEmbedder(), scoring="nearest", margin_weight=0.0, threshold=0.4)
    graph = build_graph(skills, models={"small": ScriptedModel([{"ok": True}], repeat_last=True)}, router=router, checkpoint=None)
    answered = await graph.ainvoke("when will my new card be delivered")
    assert answered.route == "card" and answered.status == "answered"
    lost = await graph.ainvoke("what is the weather like today")
    assert lost.route is None and lost.escalation_reason == "none_fits"


def test_bad_configuration_is_named():
    with pytest.raises(ConfigError, match="router.examples"):
        EmbeddingRouter([], HashingEmbedder())
    with pytest.raises(ConfigError, match="router.scoring"):
        EmbeddingRouter(EXAMPLES, HashingEmbedder(), scoring="magic")  # type: ignore[arg-type]
