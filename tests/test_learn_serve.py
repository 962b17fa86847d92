"""A running ``slmgraph serve`` app picks up a version promoted from another
connection (as `slmgraph learn promote` in another process would) without a restart,
and a rollback too."""

from __future__ import annotations

import asyncio

import httpx

from slmgraph.learn import Learner, MemoryStrategy, SqliteLearningStore
from slmgraph.serve import create_app

from learn_helpers import helpdesk
from test_learn_loop import METAL, PIN, answers
from test_serve import running

SEEN_LATER = "I want to change my PIN now"


def chat(base: str, text: str) -> dict:
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "helpdesk", "messages": [{"role": "user", "content": text}]}, timeout=60)
    r.raise_for_status()
    return r.json()["slmgraph"]


def test_a_served_graph_serves_a_promoted_version_without_a_restart(tmp_path):
    graph, store, _ = helpdesk(tmp_path, {**answers(), SEEN_LATER: "change_pin"}, refresh_s=0.0)
    with running(create_app(graph)) as base:
        for text in [*METAL, *PIN]:
            assert chat(base, text)["status"] == "escalated"
        assert chat(base, SEEN_LATER)["status"] == "escalated"
        # Another process learns and promotes: a store object of its own on the same file.
        other = SqliteLearningStore(store.path)
        learner = Learner(other, graph.spec.skills, graph.spec.models, strategy=MemoryStrategy(adopt_after=2), holdout=0.3)
        cycle = asyncio.run(learner.cycle("triage"))
        assert cycle.promoted, cycle.note
        served = chat(base, SEEN_LATER)
        assert served["status"] == "answered" and served["route"] == "triage"
        asyncio.run(other.rollback("triage", "test"))
        assert chat(base, SEEN_LATER)["status"] == "escalated"
        asyncio.run(other.close())
