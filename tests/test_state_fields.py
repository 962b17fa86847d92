"""slmgraph's nodes in a user's state that lacks slmgraph's fields: a StateSchemaError
naming the field and the mixin, before any model call, never a silently dropped ledger."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from slmgraph import (
    EscalationAgent,
    RulesRouter,
    SLMState,
    SLMStateModel,
    Skill,
    StateSchemaError,
    escalation_node,
    fan_out,
    router_node,
    skill_node,
)
from slmgraph.graphs import add_run_list
from slmgraph.testing import FunctionModel


class Label(BaseModel):
    label: str


LABEL = Skill(name="label", description="label a text", instructions="Label it.", output_type=Label)


def small() -> FunctionModel:
    return FunctionModel(lambda messages, schema: {"label": "ok"})


def one_node_graph(state: type, node: Any) -> Any:
    builder = StateGraph(state)
    builder.add_node("tag", node)
    builder.add_edge(START, "tag")
    builder.add_edge("tag", END)
    return builder.compile()


class Plain(TypedDict, total=False):
    text: str
    label: dict | None


class PlainModel(BaseModel):
    text: str = ""
    label: dict | None = None


@pytest.mark.parametrize("state", [Plain, PlainModel], ids=["typeddict", "pydantic"])
async def test_a_skill_node_in_a_state_without_the_mixin_names_the_fields(state):
    model = small()
    graph = one_node_graph(state, skill_node(LABEL, models={"small": model}, input="text", output="label"))
    with pytest.raises(StateSchemaError) as info:
        await graph.ainvoke({"text": "hello"})
    err = info.value
    assert err.node == "tag" and err.fields == ["ledger", "escalations"]
    assert "SLMState" in str(err) and "SLMStateModel" in str(err) and "drop" in str(err)
    assert model.calls == []  # refused before any model call


class WithMixin(SLMState, total=False):
    text: str
    label: dict | None


class WithMixinModel(SLMStateModel):
    text: str = ""
    label: dict | None = None


@pytest.mark.parametrize("state", [WithMixin, WithMixinModel], ids=["typeddict", "pydantic"])
async def test_with_the_mixin_the_ledger_is_kept(state):
    graph = one_node_graph(state, skill_node(LABEL, models={"small": small()}, input="text", output="label"))
    out = await graph.ainvoke({"text": "hello"})
    ledger = out["ledger"] if isinstance(out, dict) else out.ledger
    assert len(ledger) == 1 and ledger[0]["skill"] == "label"


class NoOutputKey(SLMState, total=False):
    text: str


async def test_an_output_key_the_state_lacks_is_named():
    model = small()
    graph = one_node_graph(NoOutputKey, skill_node(LABEL, models={"small": model}, input="text", output="label"))
    with pytest.raises(StateSchemaError, match="declare 'label' in your state") as info:
        await graph.ainvoke({"text": "hello"})
    assert info.value.fields == ["label"] and "SLMState" not in str(info.value)
    assert model.calls == []


class FanState(TypedDict, total=False):
    texts: list[str]
    labels: Annotated[list[dict[str, Any]], add_run_list]


async def test_a_node_fed_by_send_payloads_is_checked_against_the_graph():
    # The fan-out target sees only its Send payload ({"item": ..., "run_id": ...}) as
    # its state; the check reads the graph's channels, not the payload.
    model = small()
    builder = StateGraph(FanState)
    builder.add_node("start", lambda state: {})
    builder.add_node("each", skill_node(LABEL, models={"small": model}, input="item", output="labels", collect=True))
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", fan_out("texts", "each"), ["each", END])
    builder.add_edge("each", END)
    with pytest.raises(StateSchemaError) as info:
        await builder.compile().ainvoke({"texts": ["a", "b"]})
    assert info.value.node == "each" and info.value.fields == ["ledger", "escalations"]
    assert model.calls == []


class FanStateWithMixin(SLMState, total=False):
    texts: list[str]
    labels: Annotated[list[dict[str, Any]], add_run_list]


async def test_a_send_fed_node_in_a_state_with_the_mixin_runs():
    builder = StateGraph(FanStateWithMixin)
    builder.add_node("start", lambda state: {})
    builder.add_node("each", skill_node(LABEL, models={"small": small()}, input="item", output="labels", collect=True))
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", fan_out("texts", "each"), ["each", END])
    builder.add_edge("each", END)
    out = await builder.compile().ainvoke({"texts": ["a", "b"]})
    assert [r["input"] for r in out["labels"]] == ["a", "b"] and len(out["ledger"]) == 2


class Request(TypedDict, total=False):
    request: str
    ledger: Annotated[list[dict[str, Any]], add_run_list]


async def test_router_and_escalation_nodes_name_what_the_state_lacks():
    models = {"small": small()}
    router = router_node(RulesRouter([], default="label"), [LABEL], models=models)
    with pytest.raises(StateSchemaError, match="GraphState") as info:
        await one_node_graph(Request, router).ainvoke({"request": "hello"})
    assert info.value.fields == ["messages", "route", "route_confidence", "escalation_reason", "escalation_detail"]
    escalate = escalation_node(EscalationAgent(), models=models)
    with pytest.raises(StateSchemaError, match="SLMState") as info:
        await one_node_graph(Request, escalate).ainvoke({"request": "hello"})
    assert info.value.fields == ["escalations"]


async def test_a_node_called_outside_a_graph_is_not_checked():
    node = skill_node(LABEL, models={"small": small()}, input="text", output="label")
    update = await node({"text": "hello"}, {"configurable": {}})
    assert update["label"] == {"label": "ok"} and len(update["ledger"]) == 1
