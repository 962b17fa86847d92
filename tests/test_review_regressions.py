"""Regressions found by the new-user review: each test failed before its fix."""

from __future__ import annotations

import json

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmgraph import GraphState, Rule, RulesRouter, Skill, escalation_node, router_node, skill_node
from slmgraph.testing import FunctionModel


class Rating(BaseModel):
    score: int


RATE = Skill(name="rate", description="rate an item", instructions="Rate it from 1 to 5.", output_type=Rating)


async def test_a_skill_node_handing_off_to_an_escalation_node_passes_its_reason_and_detail():
    """``skill_node(on_reject="escalation")`` in a user's own graph: the escalation node
    used to show the large model an empty reason and detail (they live only in the
    skill node's ``escalations`` record there)."""
    small = FunctionModel(lambda msgs, schema: "not json", logprob=-0.01)
    large = FunctionModel(lambda msgs, schema: {"action": "final", "answer": "done"}, name="big")
    models = {"small": small, "large": large}
    builder = StateGraph(GraphState)
    router = router_node(RulesRouter([], default="rate"), [RATE], models=models)
    rate = skill_node({"rate": RATE}, models=models, on_reject="escalation", output="output")
    builder.add_node("router", router)
    builder.add_node("rate", rate)
    builder.add_node("escalation", escalation_node(None, [RATE], models=models))
    builder.add_edge(START, "router")
    builder.add_conditional_edges("router", router.branch("rate"), ["rate", "escalation"])
    builder.add_conditional_edges("rate", rate.branch(), ["escalation", END])
    builder.add_edge("escalation", END)
    graph = builder.compile(checkpointer=InMemorySaver())

    out = await graph.ainvoke({"request": "rate this"}, {"configurable": {"thread_id": "t"}})

    assert out["status"] == "escalated" and out["answer"] == "done"
    sent = json.loads([m.content for m in large.calls[0].messages if m.role == "user"][0])
    assert sent["escalation_reason"] == "invalid_output"
    assert "not JSON" in sent["detail"]
    assert [(e["node"], e["status"], e["reason"]) for e in out["escalations"]] == [
        ("specialist", "rejected", "invalid_output"), ("escalation", "escalated", "invalid_output"),
    ]


def test_the_readmes_scripted_model_example_runs_as_written():
    """The README's test-double snippet used to run out of replies (agreement samples)
    and compare the typed output with a dict."""
    import re
    from pathlib import Path

    blocks = re.findall(r"```python\n(.*?)```", (Path(__file__).resolve().parent.parent / "README.md").read_text(), re.S)
    skill = next(b for b in blocks if "class Sentiment" in b)
    double = next(b for b in blocks if "ScriptedModel" in b and "assert" in b)
    namespace: dict = {}
    for code in (skill.split("\ngraph = ")[0], double):  # the skill, without its config-built graph
        exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)


def test_harden_on_a_hand_built_remote_model_names_it_once():
    """``harden(model)`` with no ``key=`` used to say "the model model's endpoint"."""
    import pytest

    from slmgraph import ConfigError, OpenAIModel, harden

    with pytest.raises(ConfigError, match=r"the model's endpoint https://api\.example\.com/v1 is not on this machine"):
        harden(OpenAIModel("gpt-x", base_url="https://api.example.com/v1", api_key="k"))
    with pytest.raises(ConfigError, match=r"the large model's endpoint"):
        harden(OpenAIModel("gpt-x", base_url="https://api.example.com/v1", api_key="k"), key="large")


def test_a_request_of_the_wrong_type_is_named_as_such_not_called_empty():
    """``graph.invoke(42)`` used to raise ``EmptyRequestError`` ("the request is empty")."""
    import pytest

    from slmgraph import EmptyRequestError, RequestError, build_graph

    graph = build_graph([RATE], models={"small": FunctionModel(lambda m, s: {"score": 3})}, checkpoint=None)
    for bad in (42, ["a list"], b"bytes"):
        with pytest.raises(RequestError, match=f"not {type(bad).__name__}") as info:
            graph.invoke(bad)
        assert not isinstance(info.value, EmptyRequestError)
    with pytest.raises(EmptyRequestError):
        graph.invoke({})
    assert graph.invoke({"text": "rate it"}).output == Rating(score=3)


def test_prune_help_offers_only_the_options_it_uses(tmp_path, capsys):
    """``slmgraph prune --help`` used to list every model flag (``--small-provider``,
    ``--threshold``, ...), none of which prune reads."""
    import pytest

    from slmgraph.cli import main

    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    assert "--checkpoint" in text and "--older-than" in text and "--json" in text
    assert "--small-provider" not in text and "--threshold" not in text and "--large-model" not in text
    ck = tmp_path / "ck.sqlite"
    from slmgraph import build_graph

    build_graph([RATE], models={"small": FunctionModel(lambda m, s: {"score": 3})}, checkpoint=str(ck)).invoke("rate it")
    assert main(["prune", "--older-than", "30d", "--dry-run", "--json", "--checkpoint", str(ck)]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True


def test_batch_with_a_graph_factory_that_does_not_import_is_a_config_error(tmp_path, capsys):
    """``slmgraph batch no_such_module:fn ...`` used to end in a ModuleNotFoundError traceback."""
    from slmgraph.cli import main

    rows = tmp_path / "in.jsonl"
    rows.write_text('{"input": "hi"}\n')
    common = [str(rows), "--out", str(tmp_path / "out.jsonl"), "--checkpoint", str(tmp_path / "ck.sqlite"), "--no-progress"]
    assert main(["batch", "slmgraph_no_such_module:fn", *common]) == 2
    assert "cannot import 'slmgraph_no_such_module'" in capsys.readouterr().err
    assert main(["batch", "json:no_such_factory", *common]) == 2
    assert "module 'json' has no graph factory 'no_such_factory'" in capsys.readouterr().err


def test_run_help_lists_every_ready_graph(capsys):
    """``slmgraph run --help`` named no graph; the list it shows now must match GRAPHS."""
    import pytest

    import json
    import subprocess
    import sys

    from slmgraph.cli import _READY, main

    # The ready graphs of a fresh process: other tests register graphs of their own.
    ready = subprocess.run(
        [sys.executable, "-c", "import json; from slmgraph.graphs import GRAPHS; print(json.dumps(sorted(GRAPHS)))"],
        capture_output=True, text=True, check=True,
    )
    assert set(_READY.split(", ")) == set(json.loads(ready.stdout))
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "contract_pipeline" in " ".join(capsys.readouterr().out.split())


async def test_the_compiled_graph_refuses_an_empty_request_as_slmgraph_does():
    """``SLMGraph.compile().ainvoke`` used to send an empty request to the models and
    answer it, where ``SLMGraph.ainvoke`` raises ``EmptyRequestError``."""
    import pytest

    from slmgraph import EmptyRequestError, build_graph

    model = FunctionModel(lambda m, s: {"score": 3})
    graph = build_graph([RATE], models={"small": model}, checkpoint=None)
    compiled = graph.compile(InMemorySaver())
    for i, empty in enumerate(["", "  \n", {}, None]):
        with pytest.raises(EmptyRequestError):
            await compiled.ainvoke({"request": empty}, {"configurable": {"thread_id": f"e{i}"}})
    with pytest.raises(EmptyRequestError):
        await compiled.ainvoke({}, {"configurable": {"thread_id": "no-request"}})
    assert model.calls == []
    out = await compiled.ainvoke({"request": "rate it"}, {"configurable": {"thread_id": "ok"}})
    assert out["status"] == "answered" and out["output"] == {"score": 3}


def test_slmgraph_run_takes_a_graph_factory_of_your_own_as_module_function(tmp_path, monkeypatch, capsys):
    """README: ``register_graph("mine", ...)`` then ``slmgraph run --graph mine`` cannot
    work (the CLI never imports the user's script); ``run`` now takes ``module:function``
    as ``batch`` did, and a module that does not import is a ConfigError."""
    from slmgraph.cli import main

    (tmp_path / "review_user_graphs.py").write_text(
        "from pydantic import BaseModel\n"
        "from slmgraph import Skill, build_graph\n"
        "from slmgraph.testing import FunctionModel\n"
        "class Priority(BaseModel):\n    priority: int\n"
        "SKILL = Skill(name='priority', description='rate urgency', instructions='Rate it 1-5.', output_type=Priority)\n"
        "def my_graph(models, *, config=None, prices=None):\n"
        "    return build_graph([SKILL], models={'small': FunctionModel(lambda m, s: {'priority': 4})},\n"
        "                       checkpoint=config.checkpoint if config else None)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ck = str(tmp_path / "ck.sqlite")
    assert main(["run", "--json", "--checkpoint", ck, "--graph", "review_user_graphs:my_graph", "server down again"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == {"priority": 4}
    assert main(["run", "--checkpoint", ck, "--graph", "review_user_graphs:nope", "hi"]) == 2
    assert "has no graph factory 'nope'" in capsys.readouterr().err
    assert main(["run", "--checkpoint", ck, "--graph", "slmgraph_no_such_module:f", "hi"]) == 2
    assert "cannot import 'slmgraph_no_such_module'" in capsys.readouterr().err
