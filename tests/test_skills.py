"""Skill runs on scripted models: acceptance, repair, confidence, checks."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    Accepted,
    ConfigError,
    EscalationReason,
    Example,
    ModelUnavailableError,
    Rejected,
    RequestShapeError,
    RequestTooLargeError,
    RunContext,
    Skill,
    run_skill,
)
from slmgraph.testing import ScriptedModel


class Label(BaseModel):
    label: Literal["refund", "card", "other"]


class Pair(BaseModel):
    name: str
    amount: int


def make_skill(**kw) -> Skill:
    base = dict(name="label", description="label tickets", instructions="Label the ticket.", output_type=Label)
    base.update(kw)
    return Skill(**base)


def ctx(model) -> RunContext:
    return RunContext(models={"small": model})


async def test_valid_first_reply_is_accepted():
    model = ScriptedModel([{"label": "refund"}])
    out = await run_skill(make_skill(), "I want my money back", ctx(model))
    assert isinstance(out, Accepted)
    assert out.output == Label(label="refund")
    assert out.attempts == 1
    assert len(model.calls) == 1


async def test_prompt_has_instructions_schema_examples_and_input():
    model = ScriptedModel([{"label": "card"}])
    skill = make_skill(examples=[Example("card is stuck", Label(label="card"))])
    await run_skill(skill, "where is my card", ctx(model))
    call = model.calls[0]
    roles = [m.role for m in call.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert "Label the ticket." in call.messages[0].content
    assert '"enum":["refund","card","other"]' in call.messages[0].content
    assert call.messages[2].content == '{"label":"card"}'
    assert call.messages[3].content == "where is my card"
    assert call.schema == Label.model_json_schema()


async def test_invalid_output_is_repaired_with_the_validation_error():
    model = ScriptedModel(["Sure! it's a refund", {"label": "nonsense"}, {"label": "refund"}])
    out = await run_skill(make_skill(), "money back", ctx(model))
    assert isinstance(out, Accepted) and out.attempts == 3
    repair = model.calls[1].messages
    assert repair[-2].role == "assistant" and repair[-2].content == "Sure! it's a refund"
    assert "not JSON" in repair[-1].content
    assert "label" in model.calls[2].messages[-1].content  # names the failing field


async def test_repairs_are_bounded_and_reject_with_the_draft():
    model = ScriptedModel([{"label": "x"}] * 5)
    skill = make_skill(acceptance=AcceptancePolicy(max_repairs=1))
    out = await run_skill(skill, "?", ctx(model))
    assert isinstance(out, Rejected)
    assert out.reason is EscalationReason.INVALID_OUTPUT
    assert out.draft == {"label": "x"}
    assert len(model.calls) == 2  # first try + 1 repair, never more
    assert model.remaining == 3


async def test_custom_check_failure_is_repaired_then_rejected():
    model = ScriptedModel([{"name": "Bob", "amount": 5}, {"name": "Bob", "amount": 7}])
    skill = Skill(
        name="pair",
        description="d",
        instructions="i",
        output_type=Pair,
        acceptance=AcceptancePolicy(max_repairs=1, check=lambda inp, out: None if out.amount < 5 else "amount must be < 5"),
    )
    out = await run_skill(skill, "Bob owes 3", ctx(model))
    assert isinstance(out, Rejected)
    assert out.reason is EscalationReason.FAILED_CHECK
    assert "amount must be < 5" in out.detail
    assert out.draft == {"name": "Bob", "amount": 7}
    assert "fails a check: amount must be < 5" in model.calls[1].messages[-1].content


async def test_confidence_from_logprobs_accepts_and_rejects():
    sure = ScriptedModel([{"label": "card"}], logprob=-0.01)
    unsure = ScriptedModel([{"label": "card"}], logprob=-2.0)
    skill = make_skill(acceptance=AcceptancePolicy(min_confidence=0.8))
    ok = await run_skill(skill, "t", ctx(sure))
    low = await run_skill(skill, "t", ctx(unsure))
    assert isinstance(ok, Accepted) and ok.confidence == pytest.approx(0.990, abs=1e-3)
    assert isinstance(low, Rejected) and low.reason is EscalationReason.LOW_CONFIDENCE
    assert low.draft == {"label": "card"}
    assert sure.calls[0].settings.logprobs is True
    assert len(sure.calls) == 1  # logprobs available: no extra samples


async def test_confidence_from_sample_agreement_without_logprobs():
    agree = ScriptedModel([{"label": "card"}, {"label": "card"}, {"label": "refund"}])
    split = ScriptedModel([{"label": "card"}, {"label": "refund"}, {"label": "other"}])
    skill = make_skill(acceptance=AcceptancePolicy(min_confidence=0.6, samples=3))
    ok = await run_skill(skill, "t", ctx(agree))
    low = await run_skill(skill, "t", ctx(split))
    assert isinstance(ok, Accepted) and ok.confidence == pytest.approx(2 / 3)
    assert isinstance(low, Rejected) and low.confidence == pytest.approx(1 / 3)
    assert agree.calls[1].settings.temperature == 0.8


async def test_model_errors_propagate_typed():
    model = ScriptedModel([ModelUnavailableError("down", model="m", provider="ollama")])
    with pytest.raises(ModelUnavailableError):
        await run_skill(make_skill(), "t", ctx(model))


async def test_oversized_prompt_is_refused_before_sending():
    model = ScriptedModel([{"label": "card"}], context_window=512)
    with pytest.raises(RequestTooLargeError) as info:
        await run_skill(make_skill(), "word " * 2000, ctx(model))
    assert model.calls == []
    assert info.value.limit == 512 - 256
    assert "split it" in str(info.value)


async def test_a_bad_value_is_a_rejection_not_a_crash():
    class Two(BaseModel):
        a: int
        b: int

    skill = make_skill(input_type=Two)
    for bad in ({"a": "two", "b": 3}, '{"a": 1, "b": 2', '{"a": "two", "b": 3}'):  # a wrong type, broken JSON
        out = await run_skill(skill, bad, ctx(ScriptedModel([])))
        assert isinstance(out, Rejected) and out.reason is EscalationReason.BAD_INPUT, bad
        assert "two" not in out.detail  # the problems, never the request's values


async def test_a_request_of_the_wrong_shape_is_a_request_error_naming_the_fields():
    class Two(BaseModel):
        a: int
        b: int

    skill = make_skill(input_type=Two)
    model = ScriptedModel([])
    cases = {"not json at all": ["a", "b"], "[1, 2]": ["a", "b"], '{"a": 1}': ["b"], "{}": ["a", "b"]}
    for request, missing in [*cases.items(), ({"b": 1}, ["a"])]:
        with pytest.raises(RequestShapeError) as info:
            await run_skill(skill, request, ctx(model))
        err = info.value
        assert (err.skill, err.required, err.missing) == (skill.name, ["a", "b"], missing), request
        assert 'pass a dict such as {"a": ..., "b": ...}, a Two instance' in str(err)
        assert err.__cause__ is None and err.__suppress_context__  # no pydantic error repeating the values
    assert "is plain text;" in _message(skill, "not json at all")
    assert "is a dict (missing a);" in _message(skill, {"b": 1})
    assert model.calls == []


def _message(skill, request) -> str:
    with pytest.raises(RequestShapeError) as info:
        skill.check_request(request)
    return str(info.value)


def test_skill_definition_errors_name_the_field():
    with pytest.raises(ConfigError, match="skill.name"):
        make_skill(name="Bad Name")
    with pytest.raises(ConfigError, match="reserved"):
        make_skill(name="none")
    with pytest.raises(ConfigError, match="min_confidence"):
        AcceptancePolicy(min_confidence=1.5)


def test_clone_rebinds_the_model_without_touching_the_original():
    s = make_skill()
    t = s.clone(model="ollama_small")
    assert (s.model, t.model) == ("small", "ollama_small")


async def test_repairs_that_outgrow_the_context_escalate_instead_of_crashing():
    # The request fits; each invalid 200-token reply makes the repair prompt longer.
    long_bad = "x" * 600
    model = ScriptedModel([long_bad] * 4, context_window=900)
    out = await run_skill(make_skill(acceptance=AcceptancePolicy(max_repairs=3)), "money back", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.INVALID_OUTPUT
    assert "no room left to repair" in out.detail and out.draft == long_bad
    assert 1 <= len(model.calls) < 4


async def test_unmeasurable_confidence_says_how_to_fix_it():
    model = ScriptedModel([{"label": "card"}])  # no logprobs
    skill = make_skill(acceptance=AcceptancePolicy(min_confidence=0.5, samples=1))
    out = await run_skill(skill, "t", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.LOW_CONFIDENCE
    assert "samples=3" in out.detail and out.confidence is None


async def test_a_backend_rejecting_its_own_reply_is_repaired_like_bad_output():
    from slmgraph import InvalidModelOutputError

    model = ScriptedModel([InvalidModelOutputError("no choices", text=""), {"label": "card"}])
    out = await run_skill(make_skill(), "t", ctx(model))
    assert isinstance(out, Accepted) and out.attempts == 2


def test_span_probability_scores_only_the_choice_tokens():
    import math

    from slmgraph.models import ModelReply, TokenLogprob

    toks = [('{"', -0.001), ("skill", -0.001), ('":"', -0.001), ("bill", math.log(0.5)), ("ing", math.log(0.8)), ('"}', -0.001)]
    reply = ModelReply('{"skill":"billing"}', "m", "p", logprobs=tuple(TokenLogprob(t, lp) for t, lp in toks))
    assert reply.span_probability("billing") == pytest.approx(0.4, rel=1e-6)
    assert reply.confidence() > 0.8  # the geometric mean over all tokens would overstate it
    assert reply.span_probability("refund") is None
