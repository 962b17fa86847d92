"""sentiment_batch: parsing a batch, per-text labels, aggregation, batching within
the context window, low-confidence reporting and escalation."""

from __future__ import annotations

import json
import re

import pytest

from slmgraph import Accepted, ConfigError, EscalationReason, Rejected, RunContext, build_graph, run_skill
from slmgraph.skills._sentiment import SentimentReport, parse_texts, sentiment_batch_skill
from slmgraph.skills._transactions import prompt_tokens
from slmgraph.testing import FunctionModel, ScriptedModel

REVIEWS = [
    "The delivery was two days late and the box was crushed.",
    "Great price for what you get.",
    "Staff at the counter were friendly and quick.",
    "It is a phone case. It fits.",
    "Overpriced and the support never answered.",
]
WORDS = {"late": ("negative", "delivery"), "overpriced": ("negative", "price"), "price": ("positive", "price"),
         "friendly": ("positive", "staff"), "fits": ("neutral", "general")}


def texts_in(messages) -> list[tuple[str, str]]:
    batch = next(m.content for m in reversed(messages) if m.content.startswith("Texts:"))
    return re.findall(r"^(r\d+): (.*)$", batch, re.M)


def rater(flip: set[str] = frozenset(), every: int = 0):
    """Labels by keyword; on draws after the first of each batch (``every`` > 0),
    texts containing a word in ``flip`` get the opposite label."""
    count = {"n": 0}

    def reply(messages, schema):
        count["n"] += 1
        draw = (count["n"] - 1) % every if every else 0
        items = []
        for ref, text in texts_in(messages):
            label, aspect = next((v for k, v in WORDS.items() if k in text.lower()), ("neutral", "general"))
            if draw and any(w in text.lower() for w in flip):
                label = "positive" if label == "negative" else "negative"
            items.append({"ref": ref, "label": label, "aspect": aspect})
        return {"items": items}

    return reply


def test_parse_texts_accepts_json_lists_and_lines():
    assert parse_texts(json.dumps(["a", " b ", "", 3])) == ["a", "b", "3"]
    assert parse_texts(json.dumps([{"text": "x"}, {"id": 2}, {"text": "y"}])) == ["x", "y"]
    assert parse_texts("first\n\n  second  \n") == ["first", "second"]
    assert parse_texts("[not json\nline two") == ["[not json", "line two"]


async def test_per_text_labels_aspects_and_counts():
    model = FunctionModel(rater())
    skill = sentiment_batch_skill(aspects=["delivery", "price", "staff"], samples=1)
    out = await run_skill(skill, json.dumps(REVIEWS), RunContext(models={"small": model}))
    assert isinstance(out, Accepted)
    report: SentimentReport = out.output
    assert [(i.item, i.label, i.aspect) for i in report.items] == [
        (1, "negative", "delivery"), (2, "positive", "price"), (3, "positive", "staff"),
        (4, "neutral", "general"), (5, "negative", "price")]
    assert report.counts == {"positive": 2, "neutral": 1, "negative": 2}
    assert report.by_aspect == {"delivery": {"negative": 1}, "general": {"neutral": 1},
                                "price": {"positive": 1, "negative": 1}, "staff": {"positive": 1}}
    assert report.unsure == [] and report.batches == 1
    assert "2 positive, 1 neutral, 2 negative" in skill.answer_text(report)


async def test_the_aspect_list_constrains_the_schema_and_free_aspects_are_short():
    model = FunctionModel(rater())
    await run_skill(sentiment_batch_skill(aspects=["delivery", "price"], samples=1), "good price",
                    RunContext(models={"small": model}))
    item = next(iter(model.calls[0].schema["$defs"].values()))
    assert item["properties"]["aspect"]["enum"] == ["delivery", "price", "general"]
    assert item["properties"]["label"]["enum"] == ["positive", "neutral", "negative"]
    assert item["properties"]["ref"]["const"] == "r1"  # one text: the only ref allowed
    await run_skill(sentiment_batch_skill(samples=1), "good price", RunContext(models={"small": model}))
    item = next(iter(model.calls[1].schema["$defs"].values()))
    assert item["properties"]["aspect"]["maxLength"] == 40 and "enum" not in item["properties"]["aspect"]


async def test_many_texts_go_in_batches_that_fit_the_window():
    texts = [f"Review {i}: " + "the delivery was late and " * (i % 9 + 1) + "I am unhappy." for i in range(40)]
    model = FunctionModel(rater(), context_window=1200)
    out = await run_skill(sentiment_batch_skill(samples=1, batch_texts=8), "\n".join(texts),
                          RunContext(models={"small": model}))
    assert isinstance(out, Accepted) and len(out.output.items) == 40
    assert all(i.label == "negative" for i in out.output.items)
    sizes = [prompt_tokens(model, c.messages) for c in model.calls]
    assert all(size + c.settings.max_tokens <= 1200 for size, c in zip(sizes, model.calls))
    per_call = [len(texts_in(c.messages)) for c in model.calls]
    assert sum(per_call) == 40 and max(per_call) < 8  # the window, not the cap, sized the batches


async def test_long_texts_are_clipped_and_marked():
    model = FunctionModel(rater())
    out = await run_skill(sentiment_batch_skill(samples=1, max_chars=50), json.dumps(["late " * 40, "price"]),
                          RunContext(models={"small": model}))
    assert [i.clipped for i in out.output.items] == [True, False]
    assert all(len(t) <= 50 for _, t in texts_in(model.calls[0].messages))


async def test_confidence_is_agreement_across_samples_and_unsure_texts_are_reported():
    model = FunctionModel(rater(flip={"friendly"}, every=3))
    out = await run_skill(sentiment_batch_skill(samples=3), json.dumps(REVIEWS), RunContext(models={"small": model}))
    assert isinstance(out, Accepted)  # 1 of 5 unsure is within the 25% limit
    report = out.output
    assert [i.confidence for i in report.items] == pytest.approx([1, 1, 1 / 3, 1, 1])
    assert report.unsure == [3] and report.items[2].unsure and report.unsure_share == pytest.approx(0.2)
    assert len(model.calls) == 3 and out.confidence == pytest.approx(1 / 3)


async def test_too_many_unsure_texts_escalate_with_the_report():
    model = FunctionModel(rater(flip={"friendly", "late"}, every=3))
    out = await run_skill(sentiment_batch_skill(samples=3), json.dumps(REVIEWS), RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.LOW_CONFIDENCE
    report = SentimentReport.model_validate(out.draft)
    assert report.unsure == [1, 3] and "2 of 5 texts (40%)" in out.detail
    # a looser threshold accepts the same answers
    model = FunctionModel(rater(flip={"friendly", "late"}, every=3))
    loose = sentiment_batch_skill(samples=3, max_unsure_share=0.5)
    assert isinstance(await run_skill(loose, json.dumps(REVIEWS), RunContext(models={"small": model})), Accepted)


async def test_invalid_answers_leave_texts_unlabelled_and_escalate():
    model = ScriptedModel([{"items": [{"ref": "r1", "label": "great"}]}], repeat_last=True)
    out = await run_skill(sentiment_batch_skill(samples=1), "a\nb", RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.INVALID_OUTPUT
    report = SentimentReport.model_validate(out.draft)
    assert [i.label for i in report.items] == [None, None] and report.unsure == [1, 2]
    assert report.counts == {"positive": 0, "neutral": 0, "negative": 0}
    assert len(model.calls) == 2  # the first try and one repair


async def test_an_empty_batch_is_bad_input_and_bad_settings_fail_at_build():
    out = await run_skill(sentiment_batch_skill(), "[]", RunContext(models={"small": ScriptedModel([])}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.BAD_INPUT
    with pytest.raises(ConfigError):
        sentiment_batch_skill(aspects=[" "])
    with pytest.raises(ConfigError):
        sentiment_batch_skill(max_unsure_share=2)
    with pytest.raises(ConfigError):
        sentiment_batch_skill(samples=0)


async def test_in_a_graph():
    model = FunctionModel(rater())
    g = build_graph([sentiment_batch_skill(samples=1)], models={"small": model}, checkpoint=None)
    r = await g.ainvoke(json.dumps(REVIEWS[:2]))
    assert (r.status, r.route) == ("answered", "sentiment_batch")
    assert r.output_json["counts"] == {"positive": 1, "neutral": 0, "negative": 1}
    assert r.answer.startswith("2 texts: 1 positive, 0 neutral, 1 negative")


@pytest.mark.embedded
async def test_real_model_labels_every_text_in_the_schema():
    from slmgraph import LlamaCppModel

    model = LlamaCppModel()
    ctx = RunContext(models={"small": model})
    skill = sentiment_batch_skill(aspects=["delivery", "price", "staff"], samples=2)
    out = await run_skill(skill, json.dumps(REVIEWS[:3]), ctx)
    report = SentimentReport.model_validate(out.output.model_dump() if isinstance(out, Accepted) else out.draft)
    assert [i.item for i in report.items] == [1, 2, 3]
    for i in report.items:
        assert i.label in ("positive", "neutral", "negative", None)
        assert i.aspect in ("delivery", "price", "staff", "general", None)
        assert i.unsure == (i.label is None or i.confidence < 0.6)
    assert sum(report.counts.values()) == sum(1 for i in report.items if i.label)
    assert isinstance(out, Accepted) == (report.unsure_share <= 0.25 and any(i.label for i in report.items))
    calls = ctx.recorder.dump()
    assert calls and all(c["prompt_tokens"] + c["completion_tokens"] <= model.context_window for c in calls)
