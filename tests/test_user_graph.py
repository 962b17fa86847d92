"""Skill nodes in a user's own StateGraph: typed outputs, a fan-out bounded by the models'
concurrency limits, per-node escalation, the ledger, and resume after a real SIGKILL."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from slmgraph import ConcurrencyLimit, GuardedModel, Price, PriceTable, SLMStateModel, skill_node
from slmgraph.graphs import RunResult, add_run_list
from slmgraph.models import Model, ModelReply, Usage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load():
    spec = importlib.util.spec_from_file_location("user_graph", HERE / "user_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_graph"] = module  # the state's annotations resolve in its module
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


ug = _load()
CLAUSES = ["Payment within 30 days.", "Liability is unlimited.", "Either party may terminate with notice."]
CFG = {"configurable": {"thread_id": "u"}}


async def test_two_skill_nodes_a_python_node_and_a_fan_out(tmp_path):
    prices = PriceTable(prices={"large-fn": Price(per_call_usd=0.5)})
    builder, find, rate = ug.build(tmp_path, prices=prices)
    state = await builder.compile().ainvoke({"contract": ug.CONTRACT})

    assert find.read(state) == ug.ClauseList(clauses=CLAUSES)  # typed outputs
    ratings = rate.read(state)
    assert ratings == [ug.Rating(risk="low"), ug.Rating(risk="high"), ug.Rating(risk="low")]
    assert [r["input"] for r in state["ratings"]] == CLAUSES
    assert state["high_risk"] == 1
    # Only the rejected clause escalated, to the large model, for the same typed output.
    assert [e["status"] for e in state["escalations"]] == ["escalated"]
    assert state["escalations"][0]["node"] == "rate" and state["escalations"][0]["reason"] == "invalid_output"
    assert [c for c in ug.calls(tmp_path) if c.startswith("large")] == ["large:Liability is unlimited."]
    # Ledger: one find call, three small rating calls, one large rating call.
    result = RunResult.from_state(state, thread_id="u", prices=prices)
    assert result.status == "escalated" and result.totals.calls == 5
    assert (result.totals.small_calls, result.totals.large_calls) == (4, 1)
    assert result.totals.large_cost_usd == pytest.approx(0.5)  # the one escalated rating
    assert result.totals.cost_usd == pytest.approx(0.5, abs=1e-3)  # plus the local machine time
    large_entry = next(e for e in result.ledger if e.tier == "large")
    assert (large_entry.node, large_entry.skill, large_entry.escalation_reason) == ("rate", "rate", "invalid_output")


async def test_without_a_large_model_the_rejected_clause_is_escalation_needed(tmp_path):
    builder, _, rate = ug.build(tmp_path, large=False)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        graph = builder.compile(checkpointer=saver)
        state = await graph.ainvoke({"contract": ug.CONTRACT}, CFG)
        assert rate.read(state) == [ug.Rating(risk="low"), None, ug.Rating(risk="low")]
        result = RunResult.from_state(state, thread_id="u")
        assert result.status == "escalation_needed" and result.escalations[0]["draft"] == {"risk": "medium"}
        # A second run on the thread starts clean: its own ledger, ratings and escalations.
        again = await graph.ainvoke({"contract": "Payment within 30 days."}, CFG)
    assert [r["input"] for r in again["ratings"]] == ["Payment within 30 days."]
    assert again["escalations"] == [] and len(again["ledger"]) == 2


async def test_the_fan_out_is_bounded_by_the_models_concurrency_limit(tmp_path):
    class Slow(Model):
        name, provider = "slow", "test"

        def __init__(self) -> None:
            self.now = self.peak = 0

        async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.01)
            self.now -= 1
            value = {"clauses": [f"Clause {i}." for i in range(10)]} if "FIND" in messages[0].content else {"risk": "low"}
            return ModelReply("", self.name, self.provider, parsed=value, usage=Usage(1, 1))

    slow = Slow()
    limit = ConcurrencyLimit(3)
    builder, _, rate = ug.build(tmp_path, wrap=lambda m: GuardedModel(slow, limit=limit))
    state = await builder.compile().ainvoke({"contract": "ten clauses"})
    assert len(rate.read(state)) == 10
    assert 1 < slow.peak <= 3  # parallel, but never past the limit


class ModelState(SLMStateModel):
    """A pydantic state: the output field is typed, LangGraph validates the JSON into it."""

    contract: str = ""
    clauses: ug.ClauseList | None = None
    ratings: Annotated[list[dict[str, Any]], add_run_list] = []


async def test_a_pydantic_state_gets_the_same_fields_and_typed_outputs(tmp_path):
    bound = ug.models(tmp_path, large=False)  # one node, no escalation needed
    builder = StateGraph(ModelState)
    builder.add_node("find", skill_node(ug.FIND, models=bound, input="contract", output="clauses", starts_run=ModelState))

    def typed(state: ModelState) -> dict:
        assert isinstance(state.clauses, ug.ClauseList)  # the JSON the node wrote, validated by the state
        return {}

    builder.add_node("check", typed)
    builder.add_edge(START, "find")
    builder.add_edge("find", "check")
    builder.add_edge("check", END)
    state = await builder.compile().ainvoke(ModelState(contract=ug.CONTRACT))
    assert ug.ClauseList.model_validate(state["clauses"]).clauses == CLAUSES
    assert len(state["ledger"]) == 1 and state["escalations"] == []


def test_resume_after_sigkill_between_nodes_does_not_rerun_the_skill_nodes(tmp_path):
    env = dict(os.environ, USER_GRAPH_KILL=str(tmp_path / "armed"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(HERE / "user_graph.py"), str(tmp_path), "k"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    before = ug.calls(tmp_path)
    assert before.count("small:find") == 1 and sum(c.startswith("small:rate") for c in before) == 3

    async def resume():
        builder, find, rate = ug.build(tmp_path)
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / ug.DB)) as saver:
            graph = builder.compile(checkpointer=saver)
            snapshot = await graph.aget_state({"configurable": {"thread_id": "k"}})
            assert snapshot.next == ("tally",)  # killed between the skill nodes and tally
            state = await graph.ainvoke(None, {"configurable": {"thread_id": "k"}})
        return state, find, rate

    state, find, rate = asyncio.run(resume())
    assert ug.calls(tmp_path) == before  # no model call was repeated
    assert state["high_risk"] == 1 and len(rate.read(state)) == 3 and len(find.read(state).clauses) == 3
    assert len(state["ledger"]) == 5  # every call the crashed process made is on the ledger
