"""A run's semantics live in the graph: compile().ainvoke and SLMGraph.ainvoke agree on a
thread; typed results and inputs; errors that name their run."""

from __future__ import annotations

from typing import Literal

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    ModelUnavailableError,
    RequestShapeError,
    Rule,
    RulesRouter,
    Skill,
    build_graph,
)
from slmgraph.graphs import GraphState, RunResult
from slmgraph.testing import FunctionModel



class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative"]


class Total(BaseModel):
    total: int


class Pair(BaseModel):
    a: int
    b: int


SENTIMENT = Skill(name="sentiment", description="rate sentiment", instructions="Rate it.", output_type=Sentiment)
# The check refuses 13, so "6 + 7" escalates: a rejected sub-task mid-thread.
ADD = Skill(name="add", description="add two numbers", instructions="Add the numbers.", output_type=Total,
            acceptance=AcceptancePolicy(max_repairs=0, check=lambda _i, o: "unlucky" if o.total == 13 else None))
RULES = RulesRouter([Rule("sentiment", (r"\blove\b", r"\bhate\b")), Rule("add", (r"\d+\s*\+\s*\d+",))])


def small_fn(messages, schema):
    text = messages[-1].content
    if "+" in text:
        a, b = (int(x) for x in text.split("+"))
        return {"total": a + b}
    return {"sentiment": "negative" if "hate" in text else "positive"}


def large_fn(messages, schema):
    return {"action": "final", "answer": "thirteen"}


def make(checkpoint, *, large: bool):
    models = {"small": FunctionModel(small_fn, name="small-fn")}
    if large:
        models["large"] = FunctionModel(large_fn, name="large-fn")
    return build_graph([SENTIMENT, ADD], models=models, router=RULES, checkpoint=checkpoint)


SEQUENCE = ["I love it", "6 + 7", "I hate it", "2 + 3", "6 + 7", "I love it again"]


def comparable(r: RunResult) -> dict:
    return r.model_dump(exclude={"run_id", "thread_id", "ledger", "totals"}) | {
        "calls": [(e.node, e.skill, e.model, e.tier) for e in r.ledger], "n": r.totals.calls,
    }


@pytest.mark.parametrize("large", [False, True], ids=["no-large-model", "large-model"])
async def test_compiled_graph_and_slmgraph_agree_on_one_thread(tmp_path, large):
    via_runner = make(tmp_path / "runner.sqlite", large=large)
    runner_results = [await via_runner.ainvoke(req, thread_id="T") for req in SEQUENCE]

    native = make(None, large=large)
    native_results = []
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "native.sqlite")) as saver:
        compiled = native.compile(saver)  # what langgraph.json / Studio load
        for req in SEQUENCE:
            state = await compiled.ainvoke({"request": req}, {"configurable": {"thread_id": "T"}})
            native_results.append(native.result_of("T", state))

    assert [comparable(r) for r in native_results] == [comparable(r) for r in runner_results]
    statuses = [r.status for r in runner_results]
    escalated = "escalated" if large else "escalation_needed"
    assert statuses == ["answered", escalated, "answered", "answered", escalated, "answered"]
    # After an escalation, the next ordinary request on the thread reaches its specialist.
    third = native_results[2]
    assert third.route == "sentiment" and third.output == Sentiment(sentiment="negative")
    assert third.escalation_reason is None and third.draft is None and third.escalations == []
    assert [e.node for e in third.ledger] == ["specialist"]


async def test_a_dict_or_the_input_model_is_a_request():
    add = Skill(name="add_pair", description="add a and b", instructions="Add a and b.", output_type=Total, input_type=Pair)
    seen = []

    def fn(messages, schema):
        seen.append(messages[-1].content)
        return {"total": 5}

    g = build_graph([add], models={"small": FunctionModel(fn)}, checkpoint=None)
    by_dict = await g.ainvoke({"a": 2, "b": 3})
    by_model = await g.ainvoke(Pair(a=2, b=3))
    for r in (by_dict, by_model):
        assert r.status == "answered" and r.output == Total(total=5) and r.output_json == {"total": 5}
    assert seen == ['{"a":2,"b":3}', '{"a":2,"b":3}']  # the skill got its typed input both times
    bad = await g.ainvoke({"a": "two", "b": 3})  # the shape, with a bad value: the skill rejects it
    assert (bad.status, bad.escalation_reason) == ("escalation_needed", "bad_input")


async def test_a_request_of_the_wrong_shape_is_refused_before_the_run(tmp_path):
    add = Skill(name="add_pair", description="add a and b", instructions="Add a and b.", output_type=Total, input_type=Pair)
    model = FunctionModel(lambda messages, schema: {"total": 5})
    large = FunctionModel(lambda messages, schema: "5", name="big")
    g = build_graph([add], models={"small": model, "large": large}, checkpoint=tmp_path / "c.sqlite")
    for request, missing in (("add two and three", ["a", "b"]), ({"a": 2}, ["b"]), ('{"b": 3}', ["a"])):
        with pytest.raises(RequestShapeError, match=r"takes a Pair with the required fields a, b") as info:
            await g.ainvoke(request)
        assert (info.value.skill, info.value.missing) == ("add_pair", missing)
    assert model.calls == [] and large.calls == []  # nothing escalated, nothing paid for
    assert await g.apending_runs(include_failed=True) == []  # refused before a run was recorded


async def test_with_several_skills_the_routed_skill_refuses_the_shape_mid_run():
    add = Skill(name="add_pair", description="add a and b", instructions="Add a and b.", output_type=Total, input_type=Pair)
    large = FunctionModel(lambda messages, schema: "5", name="big")
    g = build_graph([add, SENTIMENT], models={"small": FunctionModel(lambda m, s: {"total": 5}), "large": large},
                    router=RulesRouter([Rule("add_pair", (r"\badd\b",))], default="sentiment"), checkpoint=None)
    with pytest.raises(RequestShapeError, match="is plain text") as info:
        await g.ainvoke("add two and three")
    assert info.value.run_id and large.calls == []


async def test_a_failed_run_error_names_its_thread_and_run(tmp_path):
    down = ModelUnavailableError("down", model="m", provider="ollama")
    g = build_graph([SENTIMENT], models={"small": FunctionModel(lambda m, s: (_ for _ in ()).throw(down))},
                    checkpoint=tmp_path / "c.sqlite")
    with pytest.raises(ModelUnavailableError) as info:
        await g.ainvoke("I love it")
    err = info.value
    assert err.thread_id and err.run_id
    (run,) = await g.apending_runs(include_failed=True)
    assert (run.thread_id, run.run_id, run.status) == (err.thread_id, err.run_id, "failed")


def test_result_fields_are_the_state_fields_or_derived():
    derived = {"thread_id", "output", "output_json", "message", "totals"}
    state_fields = set(GraphState.__annotations__) | {"ledger", "escalations", "run_id"}
    assert set(RunResult.model_fields) - derived <= state_fields
