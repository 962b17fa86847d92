"""In a user's own StateGraph, a skill node that escalates its sub-task asks the large
model for the skill's typed output (validated by the same schema and checks); the
capture hook records that output as a labelled example, or as invalid."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmgraph import SLMState, Skill, skill_node
from slmgraph.graphs._nodes import Bindings
from slmgraph.learn import Capture, SqliteLearningStore
from slmgraph.learn._shadow import Outcome, compare
from slmgraph.skills._skill import AcceptancePolicy
from slmgraph.testing import ScriptedModel


class Ticket(BaseModel):
    topic: Literal["card", "payment", "other"]
    urgent: bool


class S(SLMState, total=False):
    message: str
    ticket: dict | None


TRIAGE = Skill(name="triage", description="d", instructions="Classify.", output_type=Ticket,
               acceptance=AcceptancePolicy(max_repairs=0, check=lambda i, o: "card not mentioned" if o.topic == "card" and "card" not in i.text else None))


def graph(store, small, large):
    bind = Bindings({"small": small, "large": large}, capture=Capture(store, graph="own"))
    b = StateGraph(S)
    b.add_node("triage", skill_node(TRIAGE, models=bind, input="message", output="ticket", starts_run=True))
    b.add_edge(START, "triage")
    b.add_edge("triage", END)
    return b.compile()


async def test_a_typed_escalation_in_a_skill_node_becomes_a_labelled_record(tmp_path):
    store = SqliteLearningStore(tmp_path / "l.sqlite")
    small = ScriptedModel(["not json", "still not json"])
    large = ScriptedModel([{"topic": "card", "urgent": True}])
    out = await graph(store, small, large).ainvoke({"message": "my card is gone", "run_id": "r1"})
    assert out["ticket"] == {"topic": "card", "urgent": True}
    (rec,) = await store.records()
    assert rec.skill == "triage" and rec.teacher_valid and rec.teacher_output == {"topic": "card", "urgent": True}
    assert rec.escalation_reason == "invalid_output" and rec.run_id == "r1"
    await store.close()


async def test_a_teacher_answer_that_fails_the_check_is_recorded_as_invalid(tmp_path):
    store = SqliteLearningStore(tmp_path / "l.sqlite")
    small = ScriptedModel(["not json"])
    large = ScriptedModel([{"topic": "card", "urgent": False}])  # fails the check: no "card" in the text
    await graph(store, small, large).ainvoke({"message": "I was charged twice", "run_id": "r2"})
    (rec,) = await store.records()
    assert not rec.teacher_valid and rec.teacher_output is None
    await store.close()


def test_weights_make_audits_stand_for_the_requests_they_sample():
    # Current: escalates 10 records (perfect), answers an audited request wrongly (weight 20).
    cur = [Outcome(True, 1.0, 0.001)] * 10 + [Outcome(False, 0.0, 0.0, 20.0)]
    # Candidate: answers 5 of the escalations right, fixes the audited one.
    cand = [Outcome(False, 1.0, 0.0)] * 5 + [Outcome(True, 1.0, 0.001)] * 5 + [Outcome(False, 1.0, 0.0, 20.0)]
    rep = compare("v0", cur, "v1", cand)
    assert rep.current.quality[0] == 10 / 30 and rep.candidate.quality[0] == 1.0
    assert rep.promote and "escalates less" in rep.why
    same = compare("v0", cur, "v1", cur)
    assert not same.promote and "neither" in same.why
