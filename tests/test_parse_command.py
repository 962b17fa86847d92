"""The parse_command skill: typed arguments, missing arguments, unknown commands,
and argument values the model invents."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pytest
from pydantic import Field

from slmgraph import Accepted, ConfigError, EscalationReason, LlamaCppModel, Rejected, RunContext, build_graph, run_skill
from slmgraph.skills._parse_command import CommandTemplate, ParsedCommand, parse_command_skill, value_in_text
from slmgraph.testing import ScriptedModel


class Unit(str, enum.Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


TEMPLATES = [
    CommandTemplate("set_timer", "start a countdown timer",
                    {"minutes": Annotated[int, Field(ge=1, description="how long the timer runs")]}),
    CommandTemplate("send_money", "send money to a person", {"amount": float, "to": str},
                    questions={"amount": "How much should I send?"}),
    CommandTemplate("turn_on", "switch on a device", {"device": str}),
    CommandTemplate("set_heat", "set the thermostat",
                    {"degrees": float, "unit": (Unit, Unit.celsius), "mode": Literal["heat", "cool"]}, required=["degrees"]),
]

SURE = -0.01  # scripted logprob: confidence ~0.99, so no extra samples are drawn


def ctx(model) -> RunContext:
    return RunContext(models={"small": model})


async def parse(text: str, *replies, **kw):
    model = ScriptedModel(replies, logprob=SURE)
    return await run_skill(parse_command_skill(TEMPLATES, **kw), text, ctx(model)), model


async def test_a_complete_command_comes_back_typed():
    out, model = await parse("send 12.50 dollars to Bob", {"command": "send_money", "amount": 12.5, "to": "Bob"})
    assert isinstance(out, Accepted)
    assert out.output == ParsedCommand(status="command", command="send_money", arguments={"amount": 12.5, "to": "Bob"})
    assert isinstance(out.output.arguments["amount"], float)
    # The schema is a union: one branch per template, each argument typed and nullable, plus "none".
    schema = model.calls[0].schema
    branches = {d["properties"]["command"]["const"] for d in schema["$defs"].values() if "command" in d.get("properties", {})}
    assert branches == {"set_timer", "send_money", "turn_on", "set_heat", "none"}
    minutes = schema["$defs"]["set_timer_call"]["properties"]["minutes"]
    assert minutes["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert "set_timer(minutes: integer)" in model.calls[0].messages[0].content


async def test_argument_types_and_constraints_are_validated():
    out, _ = await parse("set a timer for 0 minutes", {"command": "set_timer", "minutes": 0})
    assert isinstance(out, Accepted) and (out.output.status, out.output.missing) == ("needs_argument", ["minutes"])
    out, model = await parse("timer for 5 minutes", {"command": "set_timer", "minutes": "five"},
                             {"command": "set_timer", "minutes": 5})
    assert isinstance(out, Accepted) and out.output.arguments == {"minutes": 5}
    assert "minutes" in model.calls[1].messages[-1].content  # the wrong type was repaired
    out, _ = await parse("heat to 21 degrees", {"command": "set_heat", "degrees": 21, "unit": None, "mode": "heat"})
    assert out.output.arguments == {"degrees": 21.0, "unit": "celsius", "mode": "heat"}  # default for unit


async def test_a_missing_argument_is_a_typed_needs_argument_outcome_with_a_question():
    out, _ = await parse("set a timer", {"command": "set_timer", "minutes": None})
    assert isinstance(out, Accepted)
    assert out.output.status == "needs_argument" and out.output.missing == ["minutes"]
    assert "minutes" in out.output.question and "how long the timer runs" in out.output.question
    out, _ = await parse("send money to Alice", {"command": "send_money", "amount": None, "to": "Alice"})
    assert out.output.arguments == {"to": "Alice"} and out.output.question == "How much should I send?"


async def test_invented_argument_values_are_treated_as_missing():
    out, _ = await parse("send money to Alice", {"command": "send_money", "amount": 100, "to": "Alice"})
    assert isinstance(out, Accepted)
    assert (out.output.status, out.output.missing, out.output.arguments) == ("needs_argument", ["amount"], {"to": "Alice"})
    out, _ = await parse("please turn something on", {"command": "turn_on", "device": "kitchen lights"})
    assert out.output.status == "needs_argument" and "device" not in out.output.arguments
    out, _ = await parse("heat to 20 degrees", {"command": "set_heat", "degrees": 20, "unit": "fahrenheit", "mode": "cool"})
    assert out.output.arguments == {"degrees": 20.0, "unit": "celsius"}  # invented choices dropped; default kept


async def test_an_unknown_command_is_rejected_none_fits():
    out, _ = await parse("book a table for two", {"command": "none"})
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert out.draft == {"command": "none"} and "set_timer" in out.detail


async def test_a_command_the_request_does_not_point_to_is_rejected_none_fits():
    # A small model forces "book a table" onto set_timer: no word of set_timer, no argument value.
    out, _ = await parse("book a table tonight", {"command": "set_timer", "minutes": 45})
    assert isinstance(out, Rejected) and out.reason is EscalationReason.NONE_FITS
    assert "'set_timer'" in out.detail and out.draft == {"command": "set_timer", "minutes": 45}
    # An argument value read from the text, an inflected word, or a declared keyword grounds it.
    out, _ = await parse("wake me in 20 minutes", {"command": "set_timer", "minutes": 20})
    assert isinstance(out, Accepted) and out.output.arguments == {"minutes": 20}
    out, _ = await parse("I'm sending cash to Ann", {"command": "send_money", "amount": None, "to": None})
    assert isinstance(out, Accepted) and out.output.missing == ["amount", "to"]
    alarm = CommandTemplate("set_timer", "start a countdown timer", {"minutes": int}, keywords=("alarm",))
    skill = parse_command_skill([alarm])
    out = await run_skill(skill, "an alarm please", ctx(ScriptedModel([{"command": "set_timer", "minutes": None}], logprob=SURE)))
    assert isinstance(out, Accepted) and out.output.status == "needs_argument"


async def test_an_undeclared_command_name_is_invalid_and_escalates_after_repair():
    bad = {"command": "book_table", "people": 2}
    out, model = await parse("book a table for two", bad, bad)
    assert isinstance(out, Rejected) and out.reason is EscalationReason.INVALID_OUTPUT
    assert len(model.calls) == 2


async def test_disagreeing_samples_escalate_with_low_confidence():
    model = ScriptedModel([{"command": "turn_on", "device": "fan"}, {"command": "none"}, {"command": "set_timer", "minutes": None}])
    out = await run_skill(parse_command_skill(TEMPLATES), "fan", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.LOW_CONFIDENCE
    assert len(model.calls) == 3


@pytest.mark.parametrize(
    ("value", "text", "found"),
    [
        (5, "timer for 5 minutes", True),
        (5, "timer for five minutes", True),
        (1250.5, "send $1,250.50 to Bo", True),
        (15, "timer for 5 minutes", False),
        (100, "send money to Alice", False),
        ("Bob", "send it to bob!", True),
        ("kitchen light", "turn on the Kitchen Lights", True),
        ("Bobby", "send it to Bob", False),
        ("fan", "that was fantastic", False),
        ("", "anything", False),
        (Unit.celsius, "21 degrees celsius", True),
        (True, "anything", True),
    ],
)
def test_value_in_text(value, text, found):
    assert value_in_text(value, text) is found


def test_templates_are_checked_when_declared():
    with pytest.raises(ConfigError):
        CommandTemplate("none", "reserved", {})
    with pytest.raises(ConfigError):
        CommandTemplate("remind", "remind me", {"when": list})
    with pytest.raises(ConfigError):
        CommandTemplate("remind", "remind me", {"text": str}, required=["when"])
    with pytest.raises(ConfigError):
        parse_command_skill([TEMPLATES[0], TEMPLATES[0]])
    with pytest.raises(ConfigError):
        parse_command_skill([])
    t = CommandTemplate("dim", "dim a light", {"light": str, "level": (int, 50)})
    assert t.is_required("light") and not t.is_required("level")


# --- through a graph -----------------------------------------------------------------------


def graph(small, large=None):
    models = {"small": small} | ({"large": large} if large else {})
    return build_graph([parse_command_skill(TEMPLATES)], models=models, checkpoint=None)


async def test_graph_answers_a_command_and_a_needs_argument_outcome():
    small = ScriptedModel([{"command": "turn_on", "device": "lamp"}, {"command": "set_timer", "minutes": 30}], logprob=SURE)
    g = graph(small)
    r = await g.ainvoke("turn on the lamp")
    assert (r.status, r.output_json["status"], r.answer) == ("answered", "command", "command: turn_on(device='lamp')")
    r = await g.ainvoke("start a timer please")
    assert r.status == "answered" and r.output_json["status"] == "needs_argument"
    assert r.answer.startswith("needs_argument: set_timer is missing minutes.")


async def test_graph_escalates_an_unknown_command():
    small = ScriptedModel([{"command": "none"}], logprob=SURE)
    large = ScriptedModel([{"action": "final", "answer": "I cannot book tables."}], name="big")
    r = await graph(small, large).ainvoke("book a table")
    assert (r.status, r.escalation_reason, r.answer) == ("escalated", "none_fits", "I cannot book tables.")
    r = await graph(ScriptedModel([{"command": "none"}], logprob=SURE)).ainvoke("book a table")
    assert (r.status, r.escalation_reason) == ("escalation_needed", "none_fits")


# --- the real embedded model ---------------------------------------------------------------


@pytest.mark.embedded
@pytest.mark.parametrize("text", ["set a timer for 10 minutes", "send some money to Alice"])
async def test_real_model_gives_schema_valid_commands_with_values_from_the_text_or_escalates(text):
    model = LlamaCppModel()
    out = await run_skill(parse_command_skill(TEMPLATES, min_confidence=None, max_repairs=0), text, ctx(model))
    if isinstance(out, Rejected):
        assert out.reason in (EscalationReason.NONE_FITS, EscalationReason.INVALID_OUTPUT)
        return
    parsed = ParsedCommand.model_validate(out.output.model_dump())
    template = {t.name: t for t in TEMPLATES}[parsed.command]
    assert set(parsed.arguments) <= set(template.args)
    for name, value in parsed.arguments.items():
        default = template.specs[name][1].default
        assert value_in_text(value, text) or value == getattr(default, "value", default)
    if parsed.status == "needs_argument":
        assert parsed.missing and parsed.question
    else:
        assert not parsed.missing
