"""The contract pipeline blueprint: find clauses -> rate each (fan-out) -> summarise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmgraph.graphs import GRAPHS
from slmgraph.graphs.contract_pipeline import RiskSummary, contract_pipeline_graph
from slmgraph.testing import FunctionModel

REPO = Path(__file__).resolve().parent.parent
PAYMENT = "Customer shall pay each invoice within 30 days of the invoice date."
LIABILITY = "Supplier's liability under this agreement is unlimited in amount."
CONTRACT = f"SUPPORT AGREEMENT\n\n1. Payment. {PAYMENT}\n\n2. Liability. {LIABILITY}\n"


def _input(messages) -> dict:
    return next(json.loads(m.content) for m in reversed(messages) if m.role == "user" and m.content.startswith("{"))


def small_fn(messages, schema):
    props = schema["properties"]
    if "overall_risk" in props:
        risks = [c["risk"] for c in _input(messages)["clauses"]]
        return {"overall_risk": "high" if "high" in risks else "low", "summary": "Unlimited liability is the main risk."}
    if "risk" in props:
        clause = _input(messages)
        return {"risk": "extreme" if "unlimited" in clause["quote"] else "low", "reason": "as written"}
    return {"clauses": [{"type": "payment_terms", "quote": PAYMENT}, {"type": "limitation_of_liability", "quote": LIABILITY}]}


def large_fn(messages, schema):
    assert "overall_risk" not in schema["properties"] and "risk" in schema["properties"]  # the rating's own schema
    return {"risk": "high", "reason": "no cap on liability"}


async def test_each_clause_is_rated_and_only_the_rejected_one_escalates(tmp_path):
    small, large = FunctionModel(small_fn, name="small-fn"), FunctionModel(large_fn, name="large-fn")
    graph = contract_pipeline_graph({"small": small, "large": large})
    graph = graph.with_checkpoint(tmp_path / "c.sqlite")
    r = await graph.ainvoke(CONTRACT, thread_id="p")

    assert r.status == "escalated"
    assert isinstance(r.output, RiskSummary) and r.output.overall_risk == "high"
    assert r.answer == r.output.model_dump_json()
    assert [(e.node, e.tier) for e in r.ledger] == [
        ("find_clauses", "small"), ("rate_risk", "small"),  # payment
        ("rate_risk", "small"), ("rate_risk", "small"), ("rate_risk", "large"),  # liability: a repair, then the large model
        ("summarize", "small"),
    ]
    assert [(e["node"], e["status"]) for e in r.escalations] == [("rate_risk", "escalated")]
    assert r.escalation_reason == r.escalations[0]["reason"]  # a pipeline's result says why it escalated
    # The summariser saw both clauses, the escalated one with the large model's rating.
    seen = json.loads(small.calls[-1].messages[-1].content)
    assert [(c["type"], c["risk"]) for c in seen["clauses"]] == [("payment_terms", "low"), ("limitation_of_liability", "high")]
    assert len(large.calls) == 1


async def test_without_a_large_model_the_summary_still_covers_the_rated_clauses():
    small = FunctionModel(small_fn, name="small-fn")
    r = await contract_pipeline_graph({"small": small}).with_checkpoint(None).ainvoke(CONTRACT)
    assert r.status == "escalation_needed" and r.escalations[0]["draft"]["risk"] == "extreme"
    seen = json.loads(small.calls[-1].messages[-1].content)
    assert [(c["type"], c["risk"]) for c in seen["clauses"]] == [("payment_terms", "low"), ("limitation_of_liability", None)]
    assert r.output == RiskSummary(overall_risk="low", summary="Unlimited liability is the main risk.")


async def test_a_finder_that_verified_nothing_stops_the_pipeline_before_the_summary():
    """A finder whose quotes all fail the verbatim check used to have an empty clause
    list summarised (on SmolLM2, two minutes of local time for a made-up summary)."""

    def invented(messages, schema):
        if "clauses" in schema["properties"]:
            return {"clauses": [{"type": "payment_terms", "quote": "Customer pays whenever it likes."}]}
        raise AssertionError("nothing should be rated or summarised")

    small = FunctionModel(invented, name="small-fn")
    r = await contract_pipeline_graph({"small": small}).with_checkpoint(None).ainvoke(CONTRACT)
    assert r.status == "escalation_needed" and r.output is None
    assert {e.node for e in r.ledger} == {"find_clauses"}
    assert r.escalation_reason == r.escalations[0]["reason"] and r.escalation_reason in r.message


async def test_langgraphs_own_path_gives_the_same_runs_on_one_thread(tmp_path):
    """What ``langgraph dev`` / Studio run: the compiled graph (``langgraph.json``), the
    server's own checkpointer, ``{"request": ...}`` in; two runs on one thread."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    def models():
        return {"small": FunctionModel(small_fn, name="small-fn"), "large": FunctionModel(large_fn, name="large-fn")}

    runner = contract_pipeline_graph(models()).with_checkpoint(tmp_path / "runner.sqlite")
    via_runner = [await runner.ainvoke(CONTRACT, thread_id="T") for _ in range(2)]
    native = contract_pipeline_graph(models()).with_checkpoint(None)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "native.sqlite")) as saver:
        compiled = native.compile(saver)
        states = [await compiled.ainvoke({"request": CONTRACT}, {"configurable": {"thread_id": "T"}}) for _ in range(2)]
    via_native = [native.result_of("T", s) for s in states]

    def comparable(r):
        return (r.status, r.output, [(e.node, e.tier) for e in r.ledger], [(e["node"], e["status"]) for e in r.escalations])

    assert [comparable(r) for r in via_native] == [comparable(r) for r in via_runner]
    assert comparable(via_native[1]) == comparable(via_native[0])  # the second run starts clean
    assert len(states[1]["ratings"]) == 2 and via_native[1].output.overall_risk == "high"


def test_the_pipeline_is_a_registered_ready_graph():
    assert "contract_pipeline" in GRAPHS and "contract_review" in GRAPHS


@pytest.mark.embedded
def test_the_pipeline_runs_on_the_embedded_model_from_the_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for key in ("OLLAMA_HOST", "OPENAI_BASE_URL", "SLMGRAPH_LARGE_MODEL"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "slmgraph.cli", "run", "--graph", "contract_pipeline", "--small-provider", "embedded",
         "--checkpoint", str(tmp_path / "c.sqlite"), "--json", CONTRACT],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["status"] in ("answered", "escalation_needed")
    nodes = [e["node"] for e in r["ledger"]]
    assert nodes[0] == "find_clauses" and all(e["provider"] == "llamacpp" for e in r["ledger"])
    found = next((e for e in r["escalations"] if e["node"] == "find_clauses"), None)
    if found is None or (found.get("draft") or {}).get("clauses"):
        assert "summarize" in nodes  # the summary ran on the real model over what the finder verified
    else:
        assert "summarize" not in nodes  # nothing verified: nothing to summarise
    for e in r["escalations"]:
        assert e["status"] == "escalation_needed" and e["node"] in ("find_clauses", "rate_risk", "summarize")
    if r["status"] == "answered":
        assert RiskSummary.model_validate(r["output_json"])
