"""User code and hostile text the graph is given: refused at build with a ConfigError
naming the field, or at run with a typed error, never a stray exception mid-run.
Found by a new-user review; each test failed before its fix."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    ConfigError,
    OpenAIModel,
    RequestError,
    SLMState,
    UserError,
    Skill,
    build_graph,
    escalation_node,
    router_node,
    RulesRouter,
    skill_node,
)
from slmgraph.graphs import add_run_list
from slmgraph.privacy import PrivacyGate, PrivacyPolicy
from slmgraph.testing import ScriptedModel


class Amount(BaseModel):
    amount: float


def _skill(**changes: Any) -> Skill:
    return Skill(name="refund", description="the refund amount", instructions="Give the amount.",
                 output_type=Amount, **changes)


def _small() -> ScriptedModel:
    return ScriptedModel([{"amount": 1.0}], repeat_last=True)


# -- build time -------------------------------------------------------------------


def test_an_async_check_is_refused_at_build():
    """An ``async def`` check used to be called without being awaited: the coroutine
    counted as a failure reason, so every answer escalated (with a RuntimeWarning)."""

    async def check(request, output):
        return None

    with pytest.raises(ConfigError, match="acceptance.check") as info:
        AcceptancePolicy(check=check)
    assert "async" in str(info.value)


def test_a_sync_runner_is_refused_at_build():
    """A plain ``def`` runner used to fail mid-run with ``TypeError: object ... can't be
    used in 'await' expression``."""

    def runner(skill, data, ctx, node):
        return None

    with pytest.raises(ConfigError, match="skill.runner"):
        _skill(runner=runner)


def test_async_callables_that_are_not_plain_functions_still_pass():
    class Runner:
        async def __call__(self, skill, data, ctx, node):
            return None

    assert _skill(runner=Runner()).runner is not None


@pytest.mark.parametrize("field", ["ledger", "escalations", "run_id"])
def test_a_skill_node_writing_to_slmgraphs_own_fields_is_refused(field):
    """``output="ledger"`` used to fail mid-run with ``KeyError: 0`` in the reducer."""
    with pytest.raises(ConfigError, match="output"):
        skill_node(_skill(), models={"small": _small()}, output=field)


def test_an_async_input_function_is_refused_at_build():
    """An ``async def`` input used to hand the skill a coroutine: a bad_input rejection
    ("Input should be a valid string") and a never-awaited RuntimeWarning."""

    async def text_of(state):
        return state["text"]

    with pytest.raises(ConfigError, match="input"):
        skill_node(_skill(), models={"small": _small()}, input=text_of)


def test_node_factories_take_the_privacy_policy_their_error_asks_for():
    """The ConfigError for a remote model says "pass privacy=PrivacyPolicy(...)", but the
    node factories took no ``privacy`` argument."""
    cloud = OpenAIModel("gpt-x", base_url="http://127.0.0.1:9/v1", api_key="k", local=False)
    with pytest.raises(ConfigError, match="privacy"):
        skill_node(_skill(), models={"small": cloud})
    policy = PrivacyPolicy(action="redact")
    node = skill_node(_skill(), models={"small": cloud}, privacy=policy)
    assert isinstance(node.bind.models["small"], PrivacyGate)
    router = router_node(RulesRouter([], default="refund"), [_skill()], models={"large": cloud}, privacy=policy)
    assert isinstance(router.bind.models["large"], PrivacyGate)
    esc = escalation_node(None, [_skill()], models={"large": cloud}, privacy=policy)
    assert isinstance(esc.bind.models["large"], PrivacyGate)


# -- run time: text that is not valid Unicode -------------------------------------


@pytest.mark.parametrize("request_", ["refund \ud800 now", {"text": "refund \udcff"}])
def test_a_lone_surrogate_in_a_request_is_a_request_error(request_):
    """A lone surrogate (what undecodable bytes become) used to crash with an untyped
    ``UnicodeEncodeError`` while counting tokens."""
    graph = build_graph([_skill()], models={"small": _small()}, checkpoint=None)
    with pytest.raises(RequestError, match="surrogate"):
        graph.invoke(request_)


async def test_a_lone_surrogate_in_a_users_own_graph_is_a_request_error():
    class State(SLMState, total=False):
        text: str
        amount: dict | None

    builder = StateGraph(State)
    builder.add_node("refund", skill_node(_skill(), models={"small": _small()}, input="text", output="amount"))
    builder.add_edge(START, "refund")
    builder.add_edge("refund", END)
    with pytest.raises(RequestError, match="surrogate"):
        await builder.compile().ainvoke({"text": "refund \ud83d"})


def test_valid_non_ascii_text_still_runs():
    graph = build_graph([_skill()], models={"small": _small()}, checkpoint=None)
    assert graph.invoke("Rückerstattung 5 € 🙂").status == "answered"


# -- an escalation node in a state of the user's own ------------------------------


async def test_the_large_models_answer_survives_in_a_state_without_an_answer_field():
    """In a state made of ``SLMState`` plus the user's fields, the escalation node's
    ``answer`` had no channel: LangGraph dropped it, and the result said "answered by
    the large model" with no answer. The escalation record now carries it."""
    from slmgraph import RunResult
    from slmgraph.testing import FunctionModel

    class State(SLMState, total=False):
        request: str
        amount: dict | None

    models = {"small": FunctionModel(lambda m, s: "not json"),
              "large": FunctionModel(lambda m, s: {"action": "final", "answer": "42 EUR"}, name="big")}
    skill = _skill(acceptance=AcceptancePolicy(min_confidence=None, max_repairs=0))
    node = skill_node(skill, models=models, output="amount", on_reject="escalation", starts_run=State)
    builder = StateGraph(State)
    builder.add_node("refund", node)
    builder.add_node("escalation", escalation_node(None, [skill], models=models))
    builder.add_edge(START, "refund")
    builder.add_conditional_edges("refund", node.branch(), ["escalation", END])
    builder.add_edge("escalation", END)
    state = await builder.compile().ainvoke({"request": "refund 42 EUR"})
    assert state["escalations"][-1]["status"] == "escalated"
    assert state["escalations"][-1]["answer"] == "42 EUR"
    result = RunResult.from_state(state, thread_id="t")
    assert result.status == "escalated" and result.answer == "42 EUR"


# -- fan-out ------------------------------------------------------------------------


async def test_fan_out_over_a_string_is_refused_not_sent_per_character():
    """``fan_out("item", ...)`` on a key holding text used to send one task per character."""
    from slmgraph import UserError, fan_out

    class State(SLMState, total=False):
        text: str
        item: str
        amounts: Annotated[list, add_run_list]

    builder = StateGraph(State)
    builder.add_node("refund", skill_node(_skill(), models={"small": _small()}, input="item", output="amounts", collect=True))
    builder.add_conditional_edges(START, fan_out("text", "refund"), ["refund", END])
    builder.add_edge("refund", END)
    with pytest.raises(UserError, match="fan_out"):
        await builder.compile().ainvoke({"text": "refund 5"})


def test_the_collect_docs_name_the_reducer_that_keeps_runs_apart():
    """``operator.add`` (which the docstring suggested) keeps every earlier run's items."""
    assert "add_run_list" in skill_node.__doc__ and "such as ``operator.add``" not in skill_node.__doc__


def test_a_model_with_a_sync_complete_is_refused_at_build():
    """A user's ``Model`` subclass with a plain ``def complete`` used to fail mid-run with
    ``TypeError: object ModelReply can't be used in 'await' expression``."""
    from slmgraph import Model

    class Mine(Model):
        name, provider, context_window = "mine", "mine", 4096

        def complete(self, messages, *, schema=None, settings=None):  # type: ignore[override]
            raise AssertionError("never called")

    for make in (lambda: build_graph([_skill()], models={"small": Mine()}, checkpoint=None),
                 lambda: build_graph([_skill()], models={"small": Mine()}, checkpoint=None, harden=False),
                 lambda: skill_node(_skill(), models={"small": Mine()})):
        with pytest.raises(ConfigError, match="models.small"):
            make()
    with pytest.raises(ConfigError, match="not a model"):
        skill_node(_skill(), models={"small": object()})


# -- a state of the user's own: its input key ----------------------------------------


class _Contract(SLMState, total=False):
    contract: str
    amount: dict | None


def _one_node_graph(input_key: str):
    builder = StateGraph(_Contract)
    builder.add_node("refund", skill_node(_skill(), models={"small": _small()}, input=input_key, output="amount",
                                          starts_run=_Contract))
    builder.add_edge(START, "refund")
    builder.add_edge("refund", END)
    return builder.compile()


async def test_the_baseline_counts_a_request_held_under_a_key_of_the_users_own():
    """``RunResult.from_state`` read the baseline's request only from ``request``: a
    state holding it under ``contract`` (as the README's example does) priced a direct
    large-model call at the answer's tokens alone."""
    from slmgraph import Price, PriceTable, RunResult

    state = await _one_node_graph("contract").ainvoke({"contract": "x" * 3000})
    prices = PriceTable(prices={"large": Price(input_per_mtok=1.0)})
    result = RunResult.from_state(state, thread_id="t", output_key="amount", prices=prices, request_key="contract")
    assert result.totals.baseline_prompt_tokens == 1000  # 3000 bytes at one token per 3
    assert result.totals.baseline_usd == pytest.approx(1000 / 1e6)


async def test_a_skill_node_whose_input_key_was_never_written_says_so():
    """``input="txt"`` (a typo for ``contract``) used to skip the node silently; the run
    then read as "answered by the small models" with nothing answered."""
    from slmgraph import UserError

    with pytest.raises(UserError, match="'txt'"):
        await _one_node_graph("txt").ainvoke({"contract": "refund 5"})


async def test_a_none_input_still_skips_the_node():
    state = await _one_node_graph("contract").ainvoke({"contract": None})
    assert state.get("amount") is None and state["ledger"] == []


# -- a check's verdict, and exceptions from the user's own code --------------------


@pytest.mark.parametrize("verdict", [True, False, 42])
def test_a_check_returning_something_other_than_none_or_a_reason_is_a_user_error(verdict, tmp_path):
    """``check=lambda i, o: o.amount > 0`` used to reject every good answer with the
    reason ``True`` (and accept on ``False``), escalating to the paid model."""
    skill = _skill(acceptance=AcceptancePolicy(check=lambda request, output: verdict))
    graph = build_graph([skill], models={"small": _small()}, checkpoint=tmp_path / "c.sqlite")
    with pytest.raises(UserError, match="return None to accept") as info:
        graph.invoke("refund 1 EUR", thread_id="t-check")
    assert info.value.thread_id == "t-check" and info.value.run_id


def test_a_check_returning_none_or_a_reason_still_decides():
    ok = build_graph([_skill(acceptance=AcceptancePolicy(check=lambda i, o: None))], models={"small": _small()}, checkpoint=None)
    assert ok.invoke("refund 1 EUR").status == "answered"
    bad = build_graph([_skill(acceptance=AcceptancePolicy(check=lambda i, o: "amount too small", max_repairs=0))],
                      models={"small": _small()}, checkpoint=None)  # fmt: skip
    assert bad.invoke("refund 1 EUR").escalation_reason == "failed_check"


def test_an_exception_from_the_users_check_names_the_run(tmp_path):
    """A ``KeyError`` from a user's check used to come out with no way to find the run."""

    def check(request, output):
        raise KeyError("currency")

    graph = build_graph([_skill(acceptance=AcceptancePolicy(check=check))], models={"small": _small()},
                        checkpoint=tmp_path / "c.sqlite")  # fmt: skip
    with pytest.raises(KeyError) as info:
        graph.invoke("refund 1 EUR", thread_id="t-user")
    assert info.value.thread_id == "t-user" and info.value.run_id
    assert any(info.value.run_id in note for note in info.value.__notes__)
    failed = graph.pending_runs(include_failed=True)
    assert [(r.thread_id, r.run_id) for r in failed] == [("t-user", info.value.run_id)]
