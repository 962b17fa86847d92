"""The classify skill and the help-desk graph: retrieval narrows, the model chooses, "none" escalates."""

from __future__ import annotations

import itertools

import pytest

from slmgraph import Accepted, Config, ConfigError, EscalationReason, Rejected, RunContext, run_skill
from slmgraph.graphs.helpdesk import HELPDESK_EXAMPLES, helpdesk_graph
from slmgraph.models._embed import HashingEmbedder
from slmgraph.skills._classify import ClassifyOutput, classify_skill, derived_label
from slmgraph.testing import FunctionModel, ScriptedModel

# 250 synthetic intents, each named after a made-up word that only its examples use.
_SYL = ["ka", "lo", "mi", "ne", "su", "ta", "vo", "ri", "pe", "zu", "go", "fa", "hu", "de", "bi", "wo"]
WORDS = ["".join(p) for p in itertools.islice(itertools.product(_SYL, _SYL, ["x", "q"]), 250)]
LABELS = [f"intent_{w}" for w in WORDS]
EXAMPLES = [(t.format(w=w), f"intent_{w}") for w in WORDS for t in ("I need help with {w}", "how does {w} work")]


def skill(**kw):
    kw.setdefault("embedder", HashingEmbedder())
    kw.setdefault("decisive_margin", None)  # these tests look at what the model is asked
    return classify_skill(LABELS, EXAMPLES, **kw)


def ctx(model) -> RunContext:
    return RunContext(models={"small": model})


def labels_in(call) -> set[str]:
    text = "\n".join(m.content for m in call.messages)
    return {lb for lb in LABELS if lb in text}


async def test_retrieval_narrows_250_labels_to_top_k_and_the_choice_is_accepted():
    target = "intent_" + WORDS[37]
    model = ScriptedModel([{"label": target}])
    out = await run_skill(skill(top_k=5), f"can you help me with {WORDS[37]} please", ctx(model))
    assert isinstance(out, Accepted)
    assert isinstance(out.output, ClassifyOutput)
    assert out.output.label == target
    assert [c.label for c in out.output.candidates][0] == target
    assert len(out.output.candidates) == 5
    assert out.output.similarity == out.output.candidates[0].score > 0.3
    (call,) = model.calls
    shown = labels_in(call)
    assert target in shown and len(shown) == 5  # never the whole label set
    enum = call.schema["properties"]["label"]["enum"]
    assert sorted(enum) == sorted([c.label for c in out.output.candidates] + ["none"])


async def test_top_k_sets_how_many_candidates_the_model_sees():
    model = ScriptedModel([{"label": "none"}, {"label": "x"}])
    await run_skill(skill(top_k=3), f"what about {WORDS[3]}", ctx(model))
    assert len(labels_in(model.calls[0])) == 3
    assert len(model.calls[0].schema["properties"]["label"]["enum"]) == 4


async def test_none_rejects_with_nearest_labels_and_a_proposed_label():
    model = ScriptedModel([{"label": "none"}, {"label": "Pet Insurance Claims!"}])
    out = await run_skill(skill(), f"my {WORDS[5]} dog needs insurance", ctx(model))
    assert isinstance(out, Rejected)
    assert out.reason is EscalationReason.NONE_FITS
    assert out.draft["label"] is None
    assert out.draft["proposed_label"] == "pet_insurance_claims"
    nearest = out.draft["nearest"]
    assert len(nearest) == 5 and nearest[0]["label"] == "intent_" + WORDS[5]
    assert all(a["probability"] >= b["probability"] for a, b in zip(nearest, nearest[1:]))  # the head's ranking
    assert len(model.calls) == 2  # the choice, then the proposed name


async def test_a_proposed_label_that_already_exists_is_replaced_by_one_from_the_request():
    model = ScriptedModel([{"label": "none"}, {"label": LABELS[0]}])
    out = await run_skill(skill(), f"my {WORDS[5]} dog needs insurance", ctx(model))
    assert out.draft["proposed_label"] == derived_label(f"my {WORDS[5]} dog needs insurance")
    assert out.draft["proposed_label"] not in LABELS


async def test_low_similarity_is_none_fits_without_asking_the_model():
    model = ScriptedModel([])
    s = skill(none_threshold=0.99, propose_with_model=False)
    out = await run_skill(s, "completely unrelated words about volcanoes", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert "below the threshold 0.990" in out.draft["why"]
    assert out.draft["proposed_label"] == "completely_unrelated_words"
    assert model.calls == []


async def test_calibrated_threshold_sends_far_away_text_to_none_fits():
    model = ScriptedModel([{"label": "x"}])  # only the proposal call may happen
    out = await run_skill(skill(), "zzzz", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert len(model.calls) == 1 and "snake_case" in model.calls[0].messages[0].content


async def test_a_label_outside_the_candidates_is_never_accepted():
    outsider = LABELS[200]
    model = ScriptedModel([{"label": outsider}], repeat_last=True)
    out = await run_skill(skill(top_k=5), f"help with {WORDS[10]}", ctx(model))
    assert isinstance(out, Rejected)
    assert out.reason is EscalationReason.INVALID_OUTPUT
    assert outsider not in labels_in(model.calls[0])
    assert len(model.calls) == 2  # one repair, then escalate
    assert out.draft["nearest"][0]["label"] == "intent_" + WORDS[10]


async def test_a_decisive_retrieval_lead_is_accepted_without_a_model_call():
    model = ScriptedModel([{"label": "intent_" + WORDS[4]}])
    clear = f"I need help with {WORDS[4]}"  # a bank text verbatim: far ahead of the runner-up
    out = await run_skill(skill(decisive_margin=0.1), clear, ctx(model))
    assert isinstance(out, Accepted) and out.output.label == "intent_" + WORDS[4]
    assert model.calls == [] and out.attempts == 0
    out = await run_skill(skill(decisive_margin=1.01), clear, ctx(model))  # a lead no probability reaches
    assert out.output.label == "intent_" + WORDS[4] and len(model.calls) == 1


async def test_the_bank_is_embedded_once_and_each_request_once():
    class Counting(HashingEmbedder):
        def __init__(self):
            super().__init__()
            self.batches: list[int] = []

        async def embed(self, texts):
            self.batches.append(len(texts))
            return await super().embed(texts)

    emb = Counting()
    s = skill(embedder=emb, none_threshold=0.0)
    model = ScriptedModel([{"label": "intent_" + WORDS[1]}, {"label": "intent_" + WORDS[2]}])
    await run_skill(s, f"help with {WORDS[1]}", ctx(model))
    await run_skill(s, f"help with {WORDS[2]}", ctx(model))
    assert emb.batches == [len(EXAMPLES), 1, 1]


def test_bad_label_sets_fail_at_build_time():
    with pytest.raises(ConfigError, match="reserved"):
        classify_skill(["a", "none"], [], embedder=HashingEmbedder())
    with pytest.raises(ConfigError, match="not in the label set"):
        classify_skill(["a"], [("text", "b")], embedder=HashingEmbedder())
    with pytest.raises(ConfigError):
        classify_skill([], [], embedder=HashingEmbedder())


async def test_labels_without_examples_are_found_by_their_names():
    s = classify_skill(["card_arrival", "exchange_rate"], [], embedder=HashingEmbedder(), none_threshold=0.0)
    model = ScriptedModel([{"label": "exchange_rate"}])
    out = await run_skill(s, "what exchange rate do you use", ctx(model))
    assert out.output.candidates[0].label == "exchange_rate"


def test_derived_label_keeps_content_words_in_snake_case():
    assert derived_label("Hi, can I get a PET-insurance quote?") == "pet_insurance_quote"
    assert derived_label("?!") == "other"


# ---------------------------------------------------------------- the ready graph


async def test_helpdesk_graph_answers_with_the_chosen_intent(tmp_path):
    small = ScriptedModel([{"label": "card_arrival"}])
    g = helpdesk_graph({"small": small}, embedder=HashingEmbedder(), config=_config(tmp_path))
    r = await g.ainvoke("My new card still hasn't arrived in the post")
    assert (r.status, r.route, r.answer) == ("answered", "triage", "card_arrival")
    assert r.output_json["candidates"][0]["label"] == "card_arrival"
    assert [e.skill for e in r.ledger] == ["triage"]


async def test_helpdesk_graph_escalates_none_fits_with_the_draft(tmp_path):
    small = FunctionModel(lambda msgs, schema: {"label": "none"} if "enum" in str(schema) else {"label": "crypto wallet"})
    g = helpdesk_graph({"small": small}, embedder=HashingEmbedder(), config=_config(tmp_path))
    r = await g.ainvoke("Can I buy bitcoin with my card?")
    assert r.status == "escalation_needed"
    assert r.escalation_reason == "none_fits"
    assert r.draft["proposed_label"] == "crypto_wallet"
    assert {n["label"] for n in r.draft["nearest"]} <= {lb for _, lb in HELPDESK_EXAMPLES}


async def test_helpdesk_graph_takes_a_caller_label_set_and_examples(tmp_path):
    examples = [(f"question on {w}", f"intent_{w}") for w in WORDS[:40]]
    small = ScriptedModel([{"label": f"intent_{WORDS[9]}"}])
    g = helpdesk_graph({"small": small}, embedder=HashingEmbedder(), examples=examples, config=_config(tmp_path))
    r = await g.ainvoke(f"a question on {WORDS[9]}")
    assert r.answer == f"intent_{WORDS[9]}"


def _config(tmp_path) -> Config:
    return Config(checkpoint=str(tmp_path / "checkpoints.sqlite"))


# ---------------------------------------------------------------- the real embedded model


@pytest.mark.embedded
async def test_real_model_and_offline_encoder_classify_within_the_candidates(tmp_path):
    from slmgraph import LlamaCppModel
    from slmgraph.models._embed import default_embedder

    small = LlamaCppModel()
    g = helpdesk_graph({"small": small}, embedder=default_embedder(), config=_config(tmp_path))
    r = await g.ainvoke("My new card still hasn't arrived, I ordered it two weeks ago.")
    assert r.status in ("answered", "escalation_needed")
    assert r.ledger and all(e.model == small.name for e in r.ledger)
    builtin = {lb for _, lb in HELPDESK_EXAMPLES}
    if r.status == "answered":
        candidates = [c["label"] for c in r.output_json["candidates"]]
        assert r.answer == r.output_json["label"] and r.answer in candidates
    else:  # the weak model may say none fits; then the draft must say what was near
        assert r.escalation_reason in ("none_fits", "invalid_output")
        candidates = [c["label"] for c in r.draft["nearest"]]
    assert len(candidates) == 5 and set(candidates) <= builtin
    assert candidates[0] == "card_arrival"  # retrieval, not the model, ranks these


@pytest.mark.embedded
async def test_real_model_proposes_a_snake_case_label_when_none_fits():
    import re

    from slmgraph import LlamaCppModel
    from slmgraph.models._embed import default_embedder

    s = classify_skill(["card_arrival", "exchange_rate"], [(t, lb) for t, lb in HELPDESK_EXAMPLES
                       if lb in ("card_arrival", "exchange_rate")], embedder=default_embedder(), none_threshold=0.999)
    small = LlamaCppModel()
    out = await run_skill(s, "Can I open a savings account for my daughter?", ctx(small))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", out.draft["proposed_label"])
    assert out.draft["proposed_label"] not in ("card_arrival", "exchange_rate", "none")
    assert [n["label"] for n in out.draft["nearest"]] and out.attempts == 1  # the naming call ran


async def test_auto_margin_lets_reliable_retrieval_answer_alone_and_asks_the_model_otherwise():
    # Every example of a label repeats its own made-up word: leave-one-out retrieval
    # is always right, so a clear lead is enough and no model call is made.
    words = WORDS[:30]
    clear_bank = [(f"{w} {w} " + t, f"intent_{w}") for w in words for t in ("one", "two", "three")]
    sk = classify_skill([f"intent_{w}" for w in words], clear_bank, embedder=HashingEmbedder())
    model = ScriptedModel([{"label": "intent_" + words[0]}])
    out = await run_skill(sk, f"{words[4]} {words[4]} two three", ctx(model))
    assert isinstance(out, Accepted) and out.output.label == "intent_" + words[4]
    assert model.calls == [] and out.attempts == 0
    assert isinstance(sk.runner.decisive_margin, float)

    # Labels assigned at random to the same texts: retrieval is no better than chance,
    # no lead is reliable, and the model is always asked.
    noisy_bank = [(f"{w} {w} " + t, f"intent_{words[(i * 7 + j) % 30]}")
                  for i, w in enumerate(words) for j, t in enumerate(("one", "two", "three"))]
    sk = classify_skill([f"intent_{w}" for w in words], noisy_bank, embedder=HashingEmbedder())
    model = ScriptedModel([{"label": "none"}, {"label": "x"}])
    await run_skill(sk, f"{words[4]} {words[4]} please", ctx(model))
    assert sk.runner.decisive_margin is None and len(model.calls) >= 1


async def test_each_label_gets_its_own_none_fits_bar():
    import math

    class AngleEmbedder:  # a text "deg:N" is the unit vector at N degrees
        name = "angles"

        async def embed(self, texts):
            return [[math.cos(math.radians(float(t.split(":")[1]))), math.sin(math.radians(float(t.split(":")[1])))]
                    for t in texts]

    tight = [(f"deg:{a}", "tight") for a in (0, 1, 2, 3, 4)]
    loose = [(f"deg:{a}", "loose") for a in (90, 100, 110, 120, 130)]
    sk = classify_skill(["tight", "loose"], tight + loose, embedder=AngleEmbedder(), decisive_margin=None,
                        propose_with_model=False)
    # 6 degrees from the tight cluster: close by the loose label's standard, too far by its own.
    out = await run_skill(sk, "deg:10", ctx(ScriptedModel([])))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert await sk.runner.threshold("tight") > math.cos(math.radians(6)) > await sk.runner.threshold("loose")
    # 5 degrees from the loose cluster is within its bar: the model is asked and answers.
    model = ScriptedModel([{"label": "loose"}])
    out = await run_skill(sk, "deg:95", ctx(model))
    assert isinstance(out, Accepted) and out.output.label == "loose" and len(model.calls) == 1
