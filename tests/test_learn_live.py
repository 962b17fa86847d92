"""Shadow on live traffic: a candidate runs beside the served version on sampled live
requests. It never answers, never touches the user's ledger, its results are
recorded, and the promotion rule can use them; the served answer never waits for it."""

from __future__ import annotations

import asyncio

import pytest

from slmgraph.learn import Learner, MemoryStrategy, Version, with_learning
from slmgraph.learn._strategies import version_id

from learn_helpers import helpdesk
from test_learn_loop import METAL, PIN, answers

LIVE = ["I would like to change my card PIN", "can I change my PIN please", "how to change the PIN of my card",
        "my PIN needs changing", "change my PIN", "please let me change the card PIN"]


async def _in_shadow(tmp_path, **kw):
    """A help desk that has learned the PIN topic, its candidate in shadow on all traffic."""
    graph, store, oracle = helpdesk(tmp_path, {**answers(), **{t: "change_pin" for t in LIVE}}, refresh_s=0.0, **kw)
    for t in [*METAL, *PIN]:
        await graph.ainvoke(t)
    learner = Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=2))
    cycle = await learner.cycle("triage", live_sample=1.0)
    assert not cycle.promoted and "in shadow" in cycle.note
    assert await store.current("triage") is None and await store.shadow_of("triage") == (cycle.candidate.id, 1.0)
    return graph, store, oracle, learner, cycle.candidate.id


async def test_the_shadow_candidate_never_answers_and_its_results_are_recorded(tmp_path):
    graph, store, oracle, _, cand = await _in_shadow(tmp_path)
    twin = with_learning(graph, store, refresh_s=0.0, shadow_pending=0)  # same graph, no shadow
    for text in LIVE[:3]:
        calls = oracle.calls
        served = await graph.ainvoke(text)
        # The user gets the served version's answer: it escalates, the large model answers.
        assert served.status == "escalated" and oracle.calls == calls + 1
        plain = await twin.ainvoke(text)
        # Nothing the shadow did is in the user's ledger (the small tier's cost is metered by time).
        assert (served.totals.small_calls, served.totals.large_calls) == (plain.totals.small_calls, plain.totals.large_calls)
        assert served.totals.cost_usd == pytest.approx(plain.totals.cost_usd, rel=1e-4)
    await graph.shadow.drain()
    results = await store.shadow_results(cand)
    assert [r.request for r in results] == LIVE[:3]
    for r in results:  # what the candidate would have answered, on the small tier only
        assert r.served_escalated and not r.candidate_escalated and r.candidate_output == {"label": "change_pin", **{
            k: v for k, v in r.candidate_output.items() if k != "label"}}
        assert r.served is None and r.candidate == cand and r.run_id
    assert graph.shadow.ran == 3 and graph.shadow.failed == 0
    await store.close()


async def test_a_shadow_result_is_keyed_by_its_run_stored_once_and_redacted(tmp_path):
    from slmgraph.learn import record_key

    graph, store, oracle, _, cand = await _in_shadow(tmp_path)
    text = "change my PIN, I am reachable at jo@example.com"
    oracle.answers[text] = "change_pin"
    run = await graph.ainvoke(text, thread_id="t1")
    await graph.shadow.drain()
    [stored] = await store.shadow_results(cand)
    # The key is the run and the node (as a record's is): the same node of the same run,
    # retried or resumed, makes the same key, and the store keeps the first.
    assert stored.key == record_key(run.run_id, "shadow:specialist", text) and stored.run_id == run.run_id
    assert not await store.add_shadow(stored.model_copy(update={"candidate_escalated": True}))
    assert len(await store.shadow_results(cand)) == 1
    assert "jo@example.com" not in stored.request and "<EMAIL>" in stored.request and stored.redacted
    await store.close()


async def test_promotion_can_use_the_live_results(tmp_path):
    graph, store, _, learner, cand = await _in_shadow(tmp_path)
    for text in LIVE:
        assert (await graph.ainvoke(text)).status == "escalated"
    await graph.shadow.drain()
    too_few = await learner.judge_live(cand, min_labelled=len(LIVE) + 1)
    assert not too_few.promote and "too few" in too_few.why and await store.current("triage") is None
    report = await learner.judge_live(cand, min_labelled=len(LIVE))
    assert report.promote, report.why
    assert report.extra["source"] == "live" and report.n == len(LIVE) == report.extra["labelled"]
    assert report.candidate.escalation_rate[0] < report.current.escalation_rate[0] == 1.0
    assert report.candidate.quality[0] == 1.0 and report.quality_diff[1] >= 0.0
    assert report.candidate.cost[0] < report.current.cost[0]
    assert await store.current("triage") == cand and await store.shadow_of("triage") is None
    assert (await store.version(cand)).evaluation["source"] == "live"
    served = await graph.ainvoke("I want to change the PIN on my card")
    assert served.status == "answered" and served.output.label == "change_pin"
    await store.close()


async def test_a_candidate_worse_on_live_traffic_is_not_promoted(tmp_path):
    graph, store, _, learner, _ = await _in_shadow(tmp_path)
    snap = await learner.snapshot("triage")
    payload = {"kind": "classify", "labels": [], "pending": {}, "adopt_after": 2,
               "examples": [[r.request, "close_account"] for r in snap.records]}
    bad = Version(id=version_id("triage", "memory", payload), target="triage", strategy="memory", payload=payload)
    await store.save_version(bad)
    await store.set_shadow("triage", bad.id, 1.0, reason="test")
    for text in LIVE:
        await graph.ainvoke(text)
        await graph.shadow.drain()  # one at a time: more than max_pending in flight would be skipped by design
    results = await store.shadow_results(bad.id)
    answered = [r.candidate_output["label"] for r in results if not r.candidate_escalated]
    assert len(results) == len(LIVE) and len(answered) >= 3 and set(answered) == {"close_account"}
    report = await learner.judge_live(bad.id, min_labelled=3)
    assert not report.promote and "worse on quality" in report.why
    assert await store.current("triage") is None
    await store.close()


async def test_the_served_answer_never_waits_for_the_shadow_and_a_busy_shadow_skips(tmp_path, monkeypatch):
    import slmgraph.learn._live as live

    graph, store, _, _, cand = await _in_shadow(tmp_path, shadow_pending=1)
    gate = asyncio.Event()
    real = live.run_skill

    async def held(*args, **kwargs):
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(live, "run_skill", held)
    first = await graph.ainvoke(LIVE[0])  # returns while its shadow run is held
    assert first.status == "escalated" and graph.shadow.pending == 1
    assert await store.shadow_results(cand) == []
    await graph.ainvoke(LIVE[1])  # the shadow is busy: skipped, not queued
    assert graph.shadow.skipped == 1 and graph.shadow.pending == 1
    gate.set()
    await graph.shadow.drain()
    assert [r.request for r in await store.shadow_results(cand)] == [LIVE[0]]
    await store.close()


@pytest.mark.parametrize("share", [0.0, 0.5])
async def test_only_the_sampled_share_of_traffic_is_shadowed(tmp_path, share):
    from slmgraph.learn._live import in_sample

    graph, store, _, _, cand = await _in_shadow(tmp_path)
    await store.set_shadow("triage", cand, share)
    runs = [await graph.ainvoke(t) for t in LIVE]
    await graph.shadow.drain()
    got = {r.run_id for r in await store.shadow_results(cand)}
    assert got == {r.run_id for r in runs if in_sample(r.run_id, share)}
    if share == 0.0:
        assert got == set()
    await store.close()


async def test_the_native_langgraph_path_shadows_too(tmp_path):
    from slmgraph.graphs._state import new_run

    graph, store, _, _, cand = await _in_shadow(tmp_path)
    native = graph.compile()
    out = await native.ainvoke(new_run(LIVE[0]), {"configurable": {"thread_id": "n"}})
    assert out["status"] == "escalated"  # the served version's answer
    await graph.shadow.drain()
    [result] = await store.shadow_results(cand)
    assert result.request == LIVE[0] and not result.candidate_escalated and result.thread_id == "n"
    await store.close()
