"""Capture: an escalated run writes one record; a retried run does not write two;
PII is redacted under the default policy (and kept only when asked)."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from slmgraph import CheckpointError
from slmgraph.learn import LearningRecord, teacher_output
from slmgraph.skills._skill import AcceptancePolicy, Skill
from pydantic import BaseModel

from learn_helpers import helpdesk

PIN = "I want to change the PIN number on my card"


async def test_an_escalated_run_writes_one_labelled_record(tmp_path):
    graph, store, oracle = helpdesk(tmp_path, {PIN: "change_pin"})
    result = await graph.ainvoke(PIN)
    assert result.status == "escalated" and result.answer == "change_pin"
    (rec,) = await store.records()
    assert rec.kind == "escalation" and rec.skill == "triage"
    assert rec.request == PIN and rec.label == "change_pin" and rec.teacher_valid
    assert rec.escalation_reason == "none_fits" and rec.draft["label"] is None
    assert rec.cost_usd == pytest.approx(0.002)
    assert rec.run_id == result.run_id and rec.graph == "helpdesk" and rec.graph_version
    # an answered run writes nothing (no audit sample by default)
    answered = await graph.ainvoke("My card was stolen yesterday.")
    assert answered.status == "answered"
    assert len(await store.records()) == 1
    await store.close()


async def test_a_retried_run_does_not_write_two_records(tmp_path, monkeypatch):
    graph, store, oracle = helpdesk(tmp_path, {PIN: "change_pin"})
    put, put_writes = AsyncSqliteSaver.aput, AsyncSqliteSaver.aput_writes
    failed, on = [], [True]

    async def aput(saver, config, checkpoint, metadata, new_versions):
        if on[0] and checkpoint["channel_values"].get("status") == "escalated":
            failed.append("put")
            raise OSError(28, "No space left on device")
        return await put(saver, config, checkpoint, metadata, new_versions)

    async def aput_writes(saver, config, writes, task_id, task_path=""):
        if on[0] and ("status", "escalated") in [tuple(w) for w in writes]:  # the escalation node's writes
            failed.append("writes")
            raise OSError(28, "No space left on device")
        return await put_writes(saver, config, writes, task_id, task_path)

    monkeypatch.setattr(AsyncSqliteSaver, "aput", aput)
    monkeypatch.setattr(AsyncSqliteSaver, "aput_writes", aput_writes)
    with pytest.raises(CheckpointError):
        await graph.ainvoke(PIN, thread_id="t1")
    assert failed and oracle.calls == 1
    assert len(await store.records()) == 1  # captured before the checkpoint failed
    on[0] = False  # the disk has room again
    result = await graph.aresume("t1")
    assert result.status == "escalated"
    assert oracle.calls == 2  # the escalation node really ran again
    assert len(await store.records()) == 1
    await store.close()


async def test_the_native_langgraph_path_captures_too(tmp_path):
    graph, store, _ = helpdesk(tmp_path, {PIN: "change_pin", "Can I get a metal card?": "card_types"}, checkpoint=False)
    native = graph.compile()
    from slmgraph.graphs._state import new_run

    await native.ainvoke(new_run(PIN), {"configurable": {"thread_id": "n"}})
    await native.ainvoke(new_run("Can I get a metal card?"), {"configurable": {"thread_id": "n"}})
    assert [r.label for r in await store.records()] == ["change_pin", "card_types"]
    await store.close()


REQ = "Hi, I'm John Smith, email john.smith@example.com, phone +44 20 7946 0958; I want to change my PIN"


async def test_pii_is_redacted_in_stored_records_by_default(tmp_path):
    graph, store, _ = helpdesk(tmp_path, {REQ: "change_pin"})
    await graph.ainvoke(REQ)
    (rec,) = await store.records()
    assert rec.redacted
    blob = (tmp_path / "learn.sqlite").read_bytes()
    for value in ("john.smith@example.com", "7946", "John Smith"):
        assert value not in rec.request
        assert value.encode() not in blob
    assert "<EMAIL>" in rec.request and "<PHONE>" in rec.request and "<NAME>" in rec.request
    assert rec.label == "change_pin"
    await store.close()


async def test_raw_records_only_with_the_explicit_setting(tmp_path):
    graph, store, _ = helpdesk(tmp_path, {REQ: "change_pin"}, raw=True)
    await graph.ainvoke(REQ)
    (rec,) = await store.records()
    assert not rec.redacted and rec.request == REQ
    await store.close()


async def test_a_sample_of_accepted_answers_is_audited_by_the_large_model(tmp_path):
    stolen = ["My card was stolen yesterday.", "Someone took my wallet and my card was in it."]
    graph, store, oracle = helpdesk(tmp_path, {s: "card_lost_or_stolen" for s in stolen}, audit_sample=1.0)
    for s in stolen:
        r = await graph.ainvoke(s)
        assert r.status == "answered"
        assert r.totals.large_calls == 1  # the audit call is in the ledger
    recs = await store.records(kinds=["audit"])
    assert len(recs) == 2 and all(r.small_output["label"] == "card_lost_or_stolen" for r in recs)
    assert all(r.label == "card_lost_or_stolen" for r in recs)
    await store.close()


class Amount(BaseModel):
    amount: float
    currency: str


def test_the_teacher_output_is_validated_by_the_skill_schema_and_check():
    skill = Skill(name="amount", description="d", instructions="i", output_type=Amount,
                  acceptance=AcceptancePolicy(check=lambda inp, out: None if str(int(out.amount)) in inp.text else "amount not in text"))
    out, ok, problem, _ = teacher_output(skill, "pay 42 EUR", '{"amount": 42, "currency": "EUR"}')
    assert ok and out == {"amount": 42.0, "currency": "EUR"}
    out, ok, problem, _ = teacher_output(skill, "pay 42 EUR", '{"amount": 7, "currency": "EUR"}')
    assert not ok and "amount not in text" in problem
    out, ok, problem, _ = teacher_output(skill, "pay 42 EUR", "forty-two euros")
    assert not ok and out is None


def test_records_of_a_newer_format_are_refused(tmp_path):
    from slmgraph.learn import SchemaMismatchError, SqliteLearningStore
    from slmgraph._sync import run_sync

    store = SqliteLearningStore(tmp_path / "s.sqlite")
    rec = LearningRecord(key="k", request="x", schema_version=99)
    with pytest.raises(SchemaMismatchError):
        run_sync(store.add(rec))
    run_sync(store.close())
