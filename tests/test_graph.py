"""The routed graph on scripted models: every routing outcome, escalation, ledger, API."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from slmgraph import (
    NO_LARGE_MODEL,
    AcceptancePolicy,
    ChainRouter,
    ConfigError,
    EmptyRequestError,
    EscalationAgent,
    ModelRouter,
    Price,
    PriceTable,
    RequestTooLargeError,
    Rule,
    RulesRouter,
    Skill,
    StepLimitError,
    UnknownSkillError,
    UserError,
    build_graph,
)
from slmgraph.testing import FunctionModel, ScriptedModel


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative"]


class Total(BaseModel):
    total: int


SENTIMENT = Skill(name="sentiment", description="rate sentiment", instructions="Rate it.", output_type=Sentiment)
ADD = Skill(name="add", description="add two numbers", instructions="Add the numbers.", output_type=Total)
RULES = RulesRouter([Rule("sentiment", (r"\blove\b", r"\bhate\b")), Rule("add", (r"\d+\s*\+\s*\d+",))])


def graph(small, large=None, **kw):
    models = {"small": small} | ({"large": large} if large is not None else {})
    kw.setdefault("router", RULES)
    kw.setdefault("checkpoint", None)
    return build_graph([SENTIMENT, ADD], models=models, **kw)


async def test_route_to_specialist_and_accept():
    small = ScriptedModel([{"sentiment": "positive"}])
    r = await graph(small).ainvoke("I love this phone")
    assert (r.status, r.route, r.output_json) == ("answered", "sentiment", {"sentiment": "positive"})
    assert isinstance(r.output, Sentiment) and r.output.sentiment == "positive"  # typed
    assert r.answer == '{"sentiment":"positive"}'
    assert r.escalation_reason is None
    assert [e.node for e in r.ledger] == ["specialist"]


async def test_none_fits_escalates_to_the_large_model():
    small = ScriptedModel([])
    large = ScriptedModel([{"action": "final", "answer": "Paris"}], name="big")
    r = await graph(small, large).ainvoke("What is the capital of France?")
    assert r.status == "escalated" and r.answer == "Paris"
    assert r.route is None and r.escalation_reason == "none_fits"
    assert small.calls == []
    brief = large.calls[0].messages[-1].content
    assert "none_fits" in brief and "capital of France" in brief


async def test_low_route_confidence_escalates():
    router_model = ScriptedModel([{"skill": "sentiment"}, {"skill": "add"}, {"skill": "none"}])
    large = ScriptedModel([{"action": "final", "answer": "ok"}])
    g = graph(router_model, large, router=ModelRouter(samples=3), route_threshold=0.5)
    r = await g.ainvoke("hmm")
    assert r.route == "sentiment" and r.route_confidence == pytest.approx(1 / 3)
    assert (r.status, r.escalation_reason) == ("escalated", "low_route_confidence")
    assert [e.node for e in r.ledger] == ["router"] * 3 + ["escalation"]


async def test_model_router_confident_choice_goes_to_specialist():
    small = ScriptedModel([{"skill": "add"}, {"total": 5}], logprob=-0.001)
    r = await graph(small, router=ModelRouter()).ainvoke("two plus three")
    assert (r.status, r.route, r.output_json) == ("answered", "add", {"total": 5})
    schema = small.calls[0].schema
    assert schema["properties"]["skill"]["enum"] == ["sentiment", "add", "none"]


async def test_model_router_none_means_none_fits():
    small = ScriptedModel([{"skill": "none"}], logprob=-0.001)
    r = await graph(small, router=ModelRouter()).ainvoke("tell me a joke")
    assert (r.status, r.route, r.escalation_reason) == ("escalation_needed", None, "none_fits")


async def test_chain_router_falls_through_rules_to_model():
    small = ScriptedModel([{"skill": "add"}, {"total": 4}], logprob=-0.001)
    g = graph(small, router=ChainRouter([RULES, ModelRouter()]))
    r = await g.ainvoke("what is two and two")
    assert r.route == "add"
    r2 = await graph(ScriptedModel([{"sentiment": "negative"}]), router=ChainRouter([RULES, ModelRouter()])).ainvoke("I hate it")
    assert r2.route == "sentiment" and [e.node for e in r2.ledger] == ["specialist"]


async def test_rejected_output_escalates_with_reason_and_draft():
    small = ScriptedModel([{"total": "many"}] * 3)
    large = ScriptedModel([{"action": "final", "answer": "5"}])
    r = await graph(small, large).ainvoke("2 + 3")
    assert (r.status, r.escalation_reason, r.answer) == ("escalated", "invalid_output", "5")
    assert r.draft == {"total": "many"}
    assert "specialist_draft" in large.calls[0].messages[-1].content


async def test_no_large_model_ends_with_escalation_needed_and_keeps_the_draft():
    small = ScriptedModel([{"total": "many"}] * 3)
    r = await graph(small).ainvoke("2 + 3")
    assert r.status == "escalation_needed"
    assert r.answer is None
    assert r.draft == {"total": "many"}
    assert NO_LARGE_MODEL in r.message


async def test_escalation_agent_splits_work_across_skills_as_tools():
    small = ScriptedModel([{"total": 5}, {"total": 9}])
    large = ScriptedModel(
        [
            {"action": "call_skill", "skill": "add", "input": "2 + 3"},
            {"action": "call_skill", "skill": "add", "input": "5 + 4"},
            {"action": "final", "answer": "9"},
        ]
    )
    r = await graph(small, large).ainvoke("What is 2 plus 3, plus 4? Think step by step.")
    assert r.status == "escalated" and r.answer == "9"
    assert [c["input"] for c in r.tool_calls] == ["2 + 3", "5 + 4"]
    assert [c["result"] for c in r.tool_calls] == [{"total": 5}, {"total": 9}]
    assert "Result of add" in large.calls[1].messages[-1].content
    nodes = [(e.node, e.tier) for e in r.ledger]
    assert nodes.count(("escalation", "large")) == 3 and nodes.count(("escalation.tool", "small")) == 2


async def test_escalation_agent_refuses_tools_outside_its_policy():
    small = ScriptedModel([])
    large = ScriptedModel(
        [{"action": "call_skill", "skill": "add", "input": "1+1"}, {"action": "final", "answer": "done"}]
    )
    g = graph(small, large, escalation=EscalationAgent(tools=()))
    r = await g.ainvoke("hello there")
    assert r.answer == "done" and r.tool_calls == []
    assert small.calls == []  # the skill never ran
    assert large.calls[0].schema["properties"]["action"]["enum"] == ["final"]


async def test_escalation_step_budget_is_enforced():
    small = ScriptedModel([{"total": 1}], repeat_last=True)
    large = ScriptedModel([{"action": "call_skill", "skill": "add", "input": "1+0"}], repeat_last=True)
    g = graph(small, large, escalation=EscalationAgent(max_steps=3))
    r = await g.ainvoke("loop forever")
    assert (r.status, r.answer, r.escalation_reason) == ("escalation_failed", None, "none_fits")
    assert "3 steps" in r.escalation_detail
    assert len(large.calls) == 3
    # every call of the failed escalation is still in the ledger; the repeated tool
    # call ran once (later repeats are answered from the first result)
    assert [e.tier for e in r.ledger].count("large") == 3 and r.totals.calls == 4
    assert r.error == "StepLimitError" and len(r.tool_calls) == 1


async def test_agent_raises_step_limit_directly():
    from slmgraph import RunContext

    large = ScriptedModel([{"action": "call_skill", "skill": "nope", "input": ""}], repeat_last=True)
    agent = EscalationAgent(max_steps=2)
    with pytest.raises(StepLimitError, match="2 steps"):
        await agent.run("q", draft=None, reason="r", detail="", skills={"add": ADD}, ctx=RunContext({"large": large}))


async def test_ledger_totals_and_the_direct_large_baseline():
    small = ScriptedModel([{"total": "x"}] * 3, name="tiny")
    large = ScriptedModel([{"action": "final", "answer": "5"}], name="big")
    prices = PriceTable(
        prices={"big": Price(input_per_mtok=1000.0, output_per_mtok=2000.0)}, baseline_model="big", machine_usd_per_hour=0
    )
    r = await graph(small, large, prices=prices).ainvoke("2 + 3")
    t = r.totals
    assert (t.calls, t.small_calls, t.large_calls) == (4, 3, 1)
    assert t.prompt_tokens == sum(e.prompt_tokens for e in r.ledger)
    assert t.completion_tokens == sum(e.completion_tokens for e in r.ledger)
    big = r.ledger[-1]
    assert big.cost_usd == pytest.approx((big.prompt_tokens * 1000 + big.completion_tokens * 2000) / 1e6)
    assert all(e.cost_usd == 0 for e in r.ledger[:-1])
    assert t.cost_usd == pytest.approx(big.cost_usd)
    # the baseline: "2 + 3" (2 tokens) in and "5" (1 token) out, once, at the large price
    assert (t.baseline_prompt_tokens, t.baseline_completion_tokens) == (2, 1)
    assert t.baseline_usd == pytest.approx((2 * 1000 + 1 * 2000) / 1e6) == t.all_large_cost_usd
    assert t.saved_usd == pytest.approx(t.baseline_usd - t.cost_usd) and t.saved_usd < 0  # repairs, then escalated
    assert r.ledger[-1].escalation_reason == "invalid_output"


async def test_astream_yields_node_events_then_the_result(tmp_path):
    small = ScriptedModel([{"sentiment": "negative"}])
    g = graph(small, checkpoint=tmp_path / "c.sqlite")
    events = [e async for e in g.astream("I hate waiting", thread_id="t-1")]
    assert [e.node for e in events] == ["router", "specialist", "end"]
    assert events[0].update["route"] == "sentiment"
    assert events[-1].result.status == "answered"
    stored = await g.aget_result("t-1")
    assert stored.output_json == {"sentiment": "negative"} and stored.thread_id == "t-1"


def test_sync_wrappers_invoke_and_stream(tmp_path):
    small = ScriptedModel([{"sentiment": "positive"}, {"sentiment": "negative"}])
    g = graph(small, checkpoint=tmp_path / "c.sqlite")
    assert g.invoke("I love it").output_json == {"sentiment": "positive"}
    nodes = [e.node for e in g.stream("I hate it", thread_id="s")]
    assert nodes == ["router", "specialist", "end"]
    assert g.get_result("s").output_json == {"sentiment": "negative"}


async def test_sync_wrapper_inside_a_loop_is_a_clear_error():
    g = graph(ScriptedModel([]))
    with pytest.raises(UserError, match="await"):
        g.invoke("I love it")


async def test_empty_and_oversized_requests_are_typed_errors():
    small = ScriptedModel([], context_window=1024)
    g = graph(small)
    for empty in ("", "   \n"):
        with pytest.raises(EmptyRequestError, match="empty"):
            await g.ainvoke(empty)
    with pytest.raises(RequestTooLargeError) as info:
        await g.ainvoke("I love " + "very " * 3000)
    assert info.value.tokens > info.value.limit and info.value.model == "scripted"
    assert small.calls == []


def test_build_errors_name_the_problem():
    small = ScriptedModel([])
    with pytest.raises(UnknownSkillError, match="'refund'.*add, sentiment"):
        build_graph([SENTIMENT, ADD], models={"small": small}, router=RulesRouter([Rule("refund", ("x",))]))
    with pytest.raises(UnknownSkillError, match="'nope'"):
        build_graph([SENTIMENT], models={"small": small}, escalation=EscalationAgent(tools=["nope"]))
    with pytest.raises(ConfigError, match="models.fast"):
        build_graph([SENTIMENT.clone(model="fast")], models={"small": small})
    with pytest.raises(ConfigError, match="route_threshold"):
        build_graph([SENTIMENT], models={"small": small}, route_threshold=2)
    with pytest.raises(ConfigError, match="two skills"):
        build_graph([SENTIMENT, SENTIMENT], models={"small": small})
    with pytest.raises(ConfigError, match="bad pattern"):
        Rule("add", ("(",))


async def test_single_skill_graph_needs_no_router_call():
    g = build_graph([ADD], models={"small": FunctionModel(lambda m, s: {"total": 2})}, checkpoint=None)
    r = await g.ainvoke("1 + 1")
    assert (r.route, r.status, [e.node for e in r.ledger]) == ("add", "answered", ["specialist"])


async def test_compile_gives_a_plain_langgraph_graph():
    g = graph(ScriptedModel([{"sentiment": "positive"}]))
    compiled = g.compile()
    assert set(compiled.get_graph().nodes) >= {"router", "specialist", "escalation"}
    state = await compiled.ainvoke({"request": "I love it", "ledger": []})
    assert state["status"] == "answered"


async def test_accepted_answer_with_low_confidence_skill_policy_escalates():
    skill = SENTIMENT.clone(acceptance=AcceptancePolicy(min_confidence=0.9))
    small = ScriptedModel([{"sentiment": "positive"}], logprob=-1.0)
    g = build_graph([skill], models={"small": small}, checkpoint=None)
    r = await g.ainvoke("I love it, I guess")
    assert (r.status, r.escalation_reason) == ("escalation_needed", "low_confidence")
    assert r.draft == {"sentiment": "positive"} and r.confidence == pytest.approx(0.368, abs=1e-3)


async def test_a_new_request_on_a_used_thread_starts_a_clean_run(tmp_path):
    small = ScriptedModel([{"total": "bad"}] * 3 + [{"sentiment": "positive"}])
    g = graph(small, checkpoint=tmp_path / "c.sqlite")
    first = await g.ainvoke("2 + 3", thread_id="T")
    assert first.status == "escalation_needed" and first.draft == {"total": "bad"}
    second = await g.ainvoke("I love it", thread_id="T")
    assert (second.status, second.route, second.output_json) == ("answered", "sentiment", {"sentiment": "positive"})
    assert second.escalation_reason is None and second.draft is None
    assert second.totals.calls == 1 and [e.node for e in second.ledger] == ["specialist"]
    # the conversation itself is kept across runs on the thread
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        snap = await g.compile(saver).aget_state({"configurable": {"thread_id": "T"}})
    assert [m.content for m in snap.values["messages"]] == ["2 + 3", "I love it", '{"sentiment":"positive"}']


async def test_a_failing_node_reports_the_calls_it_made(tmp_path):
    from slmgraph import ModelUnavailableError

    small = ScriptedModel([{"total": "bad"}, ModelUnavailableError("down", model="m", provider="ollama")])
    g = graph(small, checkpoint=tmp_path / "c.sqlite")
    with pytest.raises(ModelUnavailableError) as info:
        await g.ainvoke("2 + 3", thread_id="F")
    assert [e["node"] for e in info.value.ledger] == ["specialist"]


async def test_a_custom_router_naming_an_unknown_skill_is_a_typed_error():
    from slmgraph import RouteDecision

    class Bad:
        def skill_names(self):
            return set()

        async def route(self, request, skills, ctx):
            return RouteDecision("refund", 1.0)

    with pytest.raises(UnknownSkillError, match="'refund'"):
        await graph(ScriptedModel([]), router=Bad()).ainvoke("hi")


def test_model_keys_inside_a_chain_router_are_checked_at_build():
    with pytest.raises(ConfigError, match="models.router"):
        build_graph([SENTIMENT, ADD], models={"small": ScriptedModel([])}, router=ChainRouter([RULES, ModelRouter("router")]))


async def test_model_router_confidence_is_the_probability_of_the_chosen_name():
    import math

    from slmgraph.models import ModelReply, TokenLogprob

    toks = [('{"skill":"', -0.0001), ("add", math.log(0.3)), ('"}', -0.0001)]
    reply = ModelReply('{"skill":"add"}', "r", "test", parsed={"skill": "add"},
                       logprobs=tuple(TokenLogprob(t, lp) for t, lp in toks))
    small = ScriptedModel([reply])
    r = await graph(small, router=ModelRouter(), route_threshold=0.5).ainvoke("two plus three")
    assert r.route == "add" and r.route_confidence == pytest.approx(0.3, rel=1e-3)
    assert r.escalation_reason == "low_route_confidence"  # the JSON around it would have said 0.67


async def test_malformed_agent_replies_are_re_asked_not_taken_as_answers():
    large = ScriptedModel([{"action": "final"}, {"action": "call_skil"}, {"action": "final", "answer": None},
                           {"action": "final", "answer": "42"}])
    r = await graph(ScriptedModel([]), large, escalation=EscalationAgent(max_steps=4)).ainvoke("meaning of life?")
    assert (r.status, r.answer) == ("escalated", "42")
    assert "That reply is invalid" in large.calls[1].messages[-1].content


async def test_plain_text_from_the_large_model_is_the_answer():
    large = ScriptedModel(["Paris is the capital."])
    r = await graph(ScriptedModel([]), large).ainvoke("capital of France?")
    assert (r.status, r.answer) == ("escalated", "Paris is the capital.")


async def test_an_unusable_checkpoint_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    g = graph(ScriptedModel([{"sentiment": "positive"}]), checkpoint=blocker / "sub" / "c.sqlite")
    with pytest.raises(ConfigError, match="checkpoint.*writable path"):
        await g.ainvoke("I love it")
    g2 = graph(ScriptedModel([{"sentiment": "positive"}]), checkpoint=tmp_path)  # a directory
    with pytest.raises(ConfigError, match="checkpoint"):
        await g2.ainvoke("I love it")


async def test_a_composite_skill_runs_sub_skills_through_its_runner():
    from slmgraph import Accepted, run_skill

    async def two_step(skill, data, ctx, node):
        first = await run_skill(ADD, "1 + 2", ctx, node=node)
        second = await run_skill(ADD, f"{first.output.total} + 4", ctx, node=node)
        return Accepted(second.output, None, 2)

    composite = ADD.clone(name="add_twice", runner=two_step, render=lambda o: f"total is {o.total}")
    small = ScriptedModel([{"total": 3}, {"total": 7}])
    r = await build_graph([composite], models={"small": small}, checkpoint=None).ainvoke("1 + 2 then + 4")
    assert (r.status, r.answer, r.output_json) == ("answered", "total is 7", {"total": 7})
    assert small.calls[1].messages[-1].content == "3 + 4"
    assert [e.skill for e in r.ledger] == ["add", "add"]


async def test_a_skill_with_memory_sees_the_threads_earlier_turns(tmp_path):
    class Reply(BaseModel):
        text: str

    chat = Skill(name="chat", description="chat", instructions="Chat.", output_type=Reply, memory=True,
                 render=lambda o: o.text)
    small = ScriptedModel([{"text": "Hi Ada!"}, {"text": "Your name is Ada."}])
    g = build_graph([chat], models={"small": small}, checkpoint=tmp_path / "c.sqlite")
    await g.ainvoke("I am Ada", thread_id="chat")
    r = await g.ainvoke("What is my name?", thread_id="chat")
    assert r.answer == "Your name is Ada."
    turns = [(m.role, m.content) for m in small.calls[1].messages[1:]]
    assert turns == [("user", "I am Ada"), ("assistant", "Hi Ada!"), ("user", "What is my name?")]
    assert [m.role for m in small.calls[0].messages] == ["system", "user"]  # first turn: no history
