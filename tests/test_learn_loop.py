"""One learning cycle on the scripted models: memory teaches a paraphrase, a new label
is adopted at N agreeing records (not N-1), a worse candidate is not promoted, a
promoted version is served without a restart, rollback restores the previous one,
and drift rolls back on its own."""

from __future__ import annotations

import pytest

from slmgraph.learn import (
    DriftMonitor,
    EmptySnapshotError,
    Learner,
    MemoryStrategy,
    SqliteLearningStore,
    Version,
)
from slmgraph import RunContext, run_skill
from slmgraph.learn._doubles import first_candidate_model
from slmgraph.learn._strategies import version_id
from slmgraph.skills._skill import Rejected

from learn_helpers import helpdesk

PIN = [
    "I want to change my PIN",
    "How do I reset the PIN on my card?",
    "Can I pick a new PIN code?",
    "I forgot my PIN, can I set another one?",
    "I want to change my PIN code",
]
PARAPHRASE = "I would like to change my card PIN"
UNSEEN = "could I pick a new PIN?"
METAL = ["Do you have metal cards?", "Can I get a card made of metal?"]


def answers() -> dict[str, str]:
    return {**{p: "change_pin" for p in PIN}, PARAPHRASE: "change_pin", **{m: "card_types" for m in METAL}}


async def run_all(graph, texts):
    return [await graph.ainvoke(t) for t in texts]


async def test_after_one_cycle_a_paraphrase_of_an_escalated_request_is_answered_on_the_small_tier(tmp_path):
    graph, store, oracle = helpdesk(tmp_path, answers(), refresh_s=0.0)
    learner = Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=3))
    before = await run_skill(learner.skills["triage"], UNSEEN, RunContext(models={"small": first_candidate_model()}))
    assert isinstance(before, Rejected)  # the skill does not know the topic yet
    assert all(r.status == "escalated" for r in await run_all(graph, PIN))
    cycle = await learner.cycle("triage")
    assert cycle.promoted, cycle.note
    assert cycle.candidate.payload["labels"] == ["change_pin"]
    rep = cycle.report
    assert rep.candidate.escalation_rate[0] < rep.current.escalation_rate[0]
    assert rep.candidate.cost[0] < rep.current.cost[0]
    calls = oracle.calls
    after = await graph.ainvoke(UNSEEN)
    assert after.status == "answered" and after.output.label == "change_pin"
    assert after.totals.large_calls == 0 and oracle.calls == calls
    await store.close()


@pytest.mark.parametrize("n", [2, 3])
async def test_a_new_label_is_adopted_at_n_agreeing_records_not_n_minus_1(tmp_path, n):
    graph, store, _ = helpdesk(tmp_path, answers())
    await run_all(graph, PIN[: n - 1])  # N-1 agreeing records
    learner = Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=n), holdout=0.0)
    snap = await learner.snapshot("triage")
    parent = None
    cand = await learner.strategy.propose(learner.skills["triage"], snap, parent)
    assert cand.payload["labels"] == [] and cand.payload["pending"] == {"change_pin": n - 1}
    await run_all(graph, PIN[n - 1 : n])  # the N-th
    cand = await learner.strategy.propose(learner.skills["triage"], await learner.snapshot("triage"), parent)
    assert cand.payload["labels"] == ["change_pin"] and cand.payload["pending"] == {}
    assert len(cand.payload["examples"]) == n
    await store.close()


async def _learned(tmp_path, **kw):
    graph, store, oracle = helpdesk(tmp_path, answers(), refresh_s=0.0, **kw)
    await run_all(graph, [*METAL, *PIN])
    learner = Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=2))
    return graph, store, oracle, learner


async def test_a_worse_candidate_is_not_promoted(tmp_path):
    graph, store, _, learner = await _learned(tmp_path)
    snap = await learner.snapshot("triage")
    # Teach the PIN requests as "close_account": answered on the small tier, but wrong.
    payload = {"kind": "classify", "labels": [], "pending": {}, "adopt_after": 2,
               "examples": [[r.request, "close_account"] for r in snap.records]}
    bad = Version(id=version_id("triage", "memory", payload), target="triage", strategy="memory", payload=payload)
    report = await learner.evaluate(bad, snap, None)
    assert report.candidate.escalation_rate[0] < report.current.escalation_rate[0]  # it escalates less...
    assert not report.promote and "worse on quality" in report.why  # ...but is wrong
    good = await learner.cycle("triage")
    assert good.promoted
    assert await store.current("triage") == good.candidate.id
    await store.close()


async def test_a_promoted_version_is_served_without_a_restart_and_rollback_restores(tmp_path):
    graph, store, _, learner = await _learned(tmp_path)
    assert (await graph.ainvoke(PARAPHRASE)).status == "escalated"
    cycle = await learner.cycle("triage", promote=False)
    assert cycle.report.promote and not cycle.promoted
    # Promote from "another process": a second store object on the same file.
    other = SqliteLearningStore(store.path)
    await other.promote("triage", cycle.candidate.id, "test")
    served = await graph.ainvoke(PARAPHRASE)
    assert served.status == "answered" and served.output.label == "change_pin"
    assert await other.rollback("triage", "test rollback") is None
    assert (await graph.ainvoke(PARAPHRASE)).status == "escalated"  # the skill as built again
    events = [(e.kind, e.detail.get("reason")) for e in await store.events("triage")]
    assert ("promote", "test") in events and ("rollback", "test rollback") in events
    await other.close()
    await store.close()


async def test_rollback_restores_the_previous_promoted_version(tmp_path):
    graph, store, oracle, learner = await _learned(tmp_path)
    first = (await learner.cycle("triage")).candidate.id
    oracle.answers["Is there a card in titanium?"] = "card_types"
    assert (await graph.ainvoke("Is there a card in titanium?")).status == "escalated"  # new data, new candidate
    second = await learner.strategy.propose(learner.skills["triage"], await learner.snapshot("triage"), await store.version(first))
    await store.save_version(second)
    await learner.promote(second.id)
    assert await store.history("triage") == [first, second.id]
    assert await learner.rollback("triage", reason="operator") == first
    assert await store.current("triage") == first
    await store.close()


async def test_drift_in_the_live_escalation_rate_triggers_rollback(tmp_path):
    monitor = DriftMonitor(window=10, min_runs=5, escalation_margin=0.2)
    graph, store, oracle, learner = await _learned(tmp_path, monitor=monitor)
    cycle = await learner.cycle("triage")
    assert cycle.promoted and cycle.report.candidate.escalation_rate[0] <= 0.5
    # Live traffic turns to topics the version cannot answer: it escalates every time.
    for i in range(6):
        text = f"Do you offer mortgage number {i} for my second holiday home?"
        oracle.answers[text] = "mortgage"
        await graph.ainvoke(text)
        if await store.current("triage") is None:
            break
    assert await store.current("triage") is None
    (ev,) = [e for e in await store.events("triage") if e.kind == "rollback"]
    assert ev.detail["automatic"] and "live escalation rate" in ev.detail["reason"]
    assert monitor.rollbacks and monitor.rollbacks[0].detail["from"] == cycle.candidate.id
    await store.close()


async def test_spot_check_disagreement_triggers_rollback(tmp_path):
    monitor = DriftMonitor(window=10, min_runs=10, min_audits=3, disagreement_bound=0.5, escalation_margin=1.0)
    graph, store, oracle, learner = await _learned(tmp_path, monitor=monitor, audit_sample=1.0)
    cycle = await learner.cycle("triage")
    assert cycle.promoted
    # The large model now says these PIN requests are something else: the small tier disagrees.
    for i, text in enumerate(["I want to change my PIN now", "I want to change my PIN code please", "I want to change my PIN today"]):
        oracle.answers[text] = "card_security"
        assert (await graph.ainvoke(text)).status == "answered", text
    assert await store.current("triage") is None
    (ev,) = [e for e in await store.events("triage") if e.kind == "rollback"]
    assert "spot checks disagree" in ev.detail["reason"]
    await store.close()


async def test_a_cycle_without_a_holdout_is_a_typed_error(tmp_path):
    graph, store, _ = helpdesk(tmp_path, answers())
    await run_all(graph, PIN[:1])
    with pytest.raises(EmptySnapshotError, match="holdout"):
        await Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=1)).cycle("triage")
    await store.close()


@pytest.mark.embedded
async def test_memory_on_the_embedded_model(tmp_path):
    """The same cycle with SmolLM2-135M in-process as the small tier (it names the
    unknown topics; retrieval over the learned bank answers the paraphrase)."""
    from slmgraph.models._llamacpp import LlamaCppModel

    from learn_helpers import triage

    small = LlamaCppModel()
    graph, store, oracle = helpdesk(tmp_path, answers(), small=small, skill=triage(margin=0.15), refresh_s=0.0)
    runs = await run_all(graph, PIN)
    assert all(r.status == "escalated" for r in runs)
    assert all(any(e.provider == "llamacpp" for e in r.ledger) for r in runs)  # SmolLM2 named the topic
    cycle = await Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=3)).cycle("triage")
    assert cycle.promoted, cycle.note
    after = await graph.ainvoke("I want to change my PIN now")
    assert after.status == "answered" and after.output.label == "change_pin" and after.totals.large_calls == 0
    await store.close()


def test_a_candidate_that_only_differs_by_rounding_is_not_promoted():
    from slmgraph.learn import compare
    from slmgraph.learn._shadow import Outcome

    same = [Outcome(True, 1.0, 0.001) for _ in range(8)]
    cheaper_by_rounding = [Outcome(True, 1.0, 0.001 - 1e-15) for _ in range(8)]
    report = compare(None, same, "triage@x", cheaper_by_rounding)
    assert not report.promote and "neither" in report.why
    really_cheaper = [Outcome(True, 1.0, 0.0009) for _ in range(8)]
    assert compare(None, same, "triage@x", really_cheaper).promote
