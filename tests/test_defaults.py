"""Safer defaults: a confidence bar where the backend gives one, build-time errors that
name the field, and a router protocol that needs only route()."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    Accepted,
    ConfigError,
    EscalationReason,
    Rejected,
    RouteDecision,
    RunContext,
    Skill,
    build_graph,
    run_skill,
)
from slmgraph.skills import DEFAULT_MIN_CONFIDENCE
from slmgraph.testing import ScriptedModel


class Refund(BaseModel):
    amount: float
    currency: str


REFUND = Skill(name="refund", description="extract a refund", instructions="Extract it.", output_type=Refund)
WRONG = {"amount": 123.45, "currency": "USD"}


def ctx(model) -> RunContext:
    return RunContext({"small": model})


async def test_the_default_acceptance_rejects_a_low_confidence_answer():
    assert REFUND.acceptance.min_confidence == "auto" and DEFAULT_MIN_CONFIDENCE == 0.5
    unsure = ScriptedModel([WRONG], logprob=-1.0)  # geometric-mean probability e^-1 = 0.37
    out = await run_skill(REFUND, "42.50 EUR, damaged", ctx(unsure))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.LOW_CONFIDENCE
    assert out.confidence == pytest.approx(0.3679, abs=1e-4) and "below the threshold 0.50" in out.detail
    assert unsure.calls[0].settings.logprobs  # the default asks the backend for logprobs


async def test_the_default_accepts_a_confident_answer_and_one_it_cannot_measure():
    sure = ScriptedModel([{"amount": 42.5, "currency": "EUR"}], logprob=-0.1)  # 0.90
    out = await run_skill(REFUND, "42.50 EUR, damaged", ctx(sure))
    assert isinstance(out, Accepted) and out.confidence == pytest.approx(0.905, abs=1e-3)
    blind = ScriptedModel([{"amount": 42.5, "currency": "EUR"}])  # no logprobs
    out = await run_skill(REFUND, "42.50 EUR, damaged", ctx(blind))
    assert isinstance(out, Accepted) and out.confidence is None and len(blind.calls) == 1  # no extra samples


async def test_the_bar_can_be_switched_off_or_set():
    unsure = [WRONG]
    off = REFUND.clone(acceptance=AcceptancePolicy(min_confidence=None))
    assert isinstance(await run_skill(off, "x", ctx(ScriptedModel(unsure, logprob=-1.0))), Accepted)
    strict = REFUND.clone(acceptance=AcceptancePolicy(min_confidence=0.95))
    assert isinstance(await run_skill(strict, "x", ctx(ScriptedModel(unsure, logprob=-0.1))), Rejected)
    with pytest.raises(ConfigError, match="min_confidence"):
        AcceptancePolicy(min_confidence="high")  # type: ignore[arg-type]


def test_a_non_pydantic_output_type_is_refused_at_construction_naming_the_field():
    with pytest.raises(ConfigError) as info:
        Skill(name="loose", description="d", instructions="i", output_type=dict)  # type: ignore[arg-type]
    assert info.value.field == "skill.output_type"
    assert "'loose'" in str(info.value) and "dict" in str(info.value) and "BaseModel" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Skill(name="loose", description="d", instructions="i", output_type=Refund, input_type=str)  # type: ignore[arg-type]
    assert info.value.field == "skill.input_type"


class OnlyRoute:
    """A custom router with nothing but route()."""

    async def route(self, request, skills, ctx):
        return RouteDecision("refund", 1.0)


async def test_a_router_with_only_route_builds_and_runs():
    small = ScriptedModel([{"amount": 42.5, "currency": "EUR"}])
    g = build_graph([REFUND], models={"small": small}, router=OnlyRoute(), checkpoint=None)
    r = await g.ainvoke("42.50 EUR, damaged")
    assert (r.status, r.route, r.output_json) == ("answered", "refund", {"amount": 42.5, "currency": "EUR"})


def test_a_router_missing_route_is_refused_at_build_naming_the_field():
    class NoRoute:
        def pick(self, request):
            return "refund"

    class SyncRoute:
        def route(self, request, skills, ctx):
            return RouteDecision("refund", 1.0)

    for bad, why in ((NoRoute(), "has no route"), (SyncRoute(), "must be `async def`")):
        with pytest.raises(ConfigError, match=why) as info:
            build_graph([REFUND], models={"small": ScriptedModel([])}, router=bad, checkpoint=None)
        assert info.value.field == "router"
