"""A small model that answers badly (RELIABILITY.md rows 8 and 9).

Row 8: invalid structured output (prose, code fences, schema echo, missing fields,
trailing commas, truncated JSON, ...) is re-asked at most ``max_repairs`` times with
the validation error, then fails typed (a rejection that escalates); never a loop,
never a crash. Row 9: a large model that loops on tool calls stops at the step
budget with a typed error, its state checkpointed, and no tool call executed twice.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy, Accepted, EscalationAgent, EscalationReason, Rejected, RulesRouter, RunContext, Skill,
    build_graph, run_skill,
)
from slmgraph.models._base import ModelReply, Usage
from slmgraph.testing import FunctionModel, ScriptedModel


class Ticket(BaseModel):
    category: Literal["billing", "technical", "account"]
    priority: int


TICKET = Skill(name="ticket", description="triage a ticket", instructions="Triage the ticket.", output_type=Ticket,
               acceptance=AcceptancePolicy(max_repairs=2))
GOOD = {"category": "billing", "priority": 2}
CAP = TICKET.acceptance.max_repairs + 1


def _truncated() -> ModelReply:
    text = '{"category": "billing", "prior'
    return ModelReply(text=text, parsed=None, model="scripted", provider="test", usage=Usage(10, 8),
                      latency_s=0.0, finish_reason="length")


#: What small models really send back instead of the JSON asked for.
BAD = {
    "prose": "The ticket is about billing and I would give it priority 2.",
    "prose_then_fence": 'Sure! Here it is:\n```json\n{"category": "billing", "priority": 2}\n```',
    "schema_echo": json.dumps(Ticket.model_json_schema()),
    "missing_field": {"category": "billing"},
    "wrong_type": {"category": "billing", "priority": "high"},
    "unknown_label": {"category": "refunds", "priority": 2},
    "trailing_comma": '{"category": "billing", "priority": 2,}',
    "single_quotes": "{'category': 'billing', 'priority': 2}",
    "truncated": _truncated(),
    "empty": "",
    "array": [GOOD],
    "deep_nesting": "[" * 50_000 + "]" * 50_000,
    "null": "null",
}


async def _run(replies: list) -> tuple[Accepted | Rejected | BaseException, ScriptedModel]:
    model = ScriptedModel(replies, context_window=1_000_000)
    ctx = RunContext.fresh({"small": model}, None, frozenset())
    try:
        return await run_skill(TICKET, "I was charged twice", ctx), model
    except BaseException as exc:  # a crash is a figure here, not a test error
        return exc, model


async def test_invalid_structured_output_is_repaired_within_the_cap_or_rejected_typed() -> None:
    repairable = attempts_total = runs = valid = crashes = 0
    max_attempts = 0
    for kind, bad in BAD.items():
        # The model fixes it after 0, 1 or 2 re-asks, or never does.
        for bad_turns in (1, 2, 3):
            replies = [bad] * bad_turns + [GOOD]
            outcome, model = await _run(replies)
            calls = len(model.calls)
            runs += 1
            if isinstance(outcome, BaseException):
                crashes += 1
                continue
            attempts_total += calls
            max_attempts = max(max_attempts, calls)
            assert calls <= CAP, (kind, bad_turns, calls)  # never loops
            if bad_turns < CAP:
                repairable += 1
                assert isinstance(outcome, Accepted), (kind, bad_turns, outcome)
                assert outcome.output == Ticket(**GOOD) and outcome.attempts == bad_turns + 1
                valid += 1
                # each re-ask shows the bad reply and says what was wrong with it
                for call in model.calls[1:]:
                    assert call.messages[-1].role == "user" and "invalid" in call.messages[-1].content
            else:
                assert isinstance(outcome, Rejected), (kind, outcome)
                assert outcome.reason is EscalationReason.INVALID_OUTPUT and outcome.attempts == CAP
                assert outcome.detail
    assert crashes == 0
    assert valid == repairable
    print(f"\nrow 8: {len(BAD)} kinds x 3 scripts: valid-after-repair {valid}/{repairable} repairable "
          f"({100 * valid / repairable:.0f}%), {valid}/{runs} overall; mean attempts "
          f"{attempts_total / runs:.2f}, max {max_attempts} (cap {CAP}); crashes {crashes}")


async def test_output_that_stays_invalid_escalates_or_ends_typed_and_never_loops(tmp_path: Path) -> None:
    small = ScriptedModel([BAD["trailing_comma"]], repeat_last=True)
    large = ScriptedModel([{"action": "final", "answer": "billing, priority 2"}])
    router = RulesRouter([], default="ticket")
    graph = build_graph([TICKET], models={"small": small, "large": large}, router=router,
                        checkpoint=tmp_path / "c.sqlite")
    result = await graph.ainvoke("I was charged twice")
    assert (result.status, result.escalation_reason) == ("escalated", "invalid_output")
    assert len(small.calls) == CAP and len(large.calls) == 1
    assert "not JSON" in result.escalation_detail

    alone = build_graph([TICKET], models={"small": ScriptedModel([BAD["prose"]], repeat_last=True)},
                        router=router, checkpoint=None)
    result = await alone.ainvoke("I was charged twice")
    assert (result.status, result.escalation_reason) == ("escalation_needed", "invalid_output")
    assert result.draft == BAD["prose"]  # the draft is kept, not lost


class Sum(BaseModel):
    total: int


ADD = Skill(name="add", description="adds numbers", instructions="Add them.", output_type=Sum)


def _looping_graph(tmp_path: Path, large, executed: list[str], max_steps: int = 4):
    def small(messages, schema):
        executed.append(messages[-1].content)
        return {"total": 3}

    return build_graph([ADD], models={"small": FunctionModel(small), "large": large},
                       router=RulesRouter([], default=None), escalation=EscalationAgent(max_steps=max_steps),
                       checkpoint=tmp_path / "loop.sqlite")


async def test_a_model_repeating_one_tool_call_stops_at_the_budget_with_state_saved(tmp_path: Path) -> None:
    large = ScriptedModel([{"action": "call_skill", "skill": "add", "input": "1+2"}], repeat_last=True)
    executed: list[str] = []
    graph = _looping_graph(tmp_path, large, executed)
    result = await graph.ainvoke("add 1 and 2, forever", thread_id="loop")

    assert (result.status, result.error) == ("escalation_failed", "StepLimitError")
    assert "all 4 steps" in result.escalation_detail
    assert len(large.calls) == 4  # steps executed at stop = the budget
    assert executed == ["1+2"]  # duplicate tool calls executed: 0
    assert len(result.tool_calls) == 1
    # later steps were told the call was a repeat, with its result
    assert "already called add" in large.calls[2].messages[-1].content
    saved = await graph.aget_result("loop")  # the state is checkpointed, not just returned
    assert saved == result
    assert [e.tier for e in saved.ledger].count("large") == 4
    print(f"\nrow 9: repeated call: steps at stop {len(large.calls)} (budget 4); tool executions "
          f"{len(executed)} for {len(large.calls)} requested; duplicates executed {len(executed) - 1}")


async def test_a_model_calling_new_tools_forever_stops_at_the_budget(tmp_path: Path) -> None:
    step = iter(range(1000))
    large = FunctionModel(lambda m, s: {"action": "call_skill", "skill": "add", "input": f"{next(step)}+1"})
    executed: list[str] = []
    graph = _looping_graph(tmp_path, large, executed, max_steps=6)
    result = await graph.ainvoke("count forever", thread_id="count")
    assert (result.status, result.error) == ("escalation_failed", "StepLimitError")
    assert len(large.calls) == 6 and len(executed) == 6 and len(set(executed)) == 6
    assert [c["input"] for c in result.tool_calls] == [f"{i}+1" for i in range(6)]
    assert (await graph.aget_result("count")).tool_calls == result.tool_calls
