"""The learning store's contract, run against both stores: SQLite (a real file) and
PostgreSQL (a real server started by the tests). Then what only a shared database
shows: two processes writing at once, a promotion made by another process served
by a running graph, the store chosen from a ``postgresql://`` checkpoint, and
``prune`` leaving the learning tables alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmgraph.config import Config
from slmgraph.learn import (
    CorruptSnapshotError,
    Event,
    LearningRecord,
    PostgresLearningStore,
    SchemaMismatchError,
    Snapshot,
    SqliteLearningStore,
    UnknownVersionError,
    Version,
)

TESTS = Path(__file__).resolve().parent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kind(request):
    return request.param


@pytest.fixture
def where(kind, tmp_path, request):
    return str(tmp_path / "learn.sqlite") if kind == "sqlite" else request.getfixturevalue("pg_dsn")


def open_store(where: str):
    return PostgresLearningStore(where) if where.startswith("postgresql://") else SqliteLearningStore(where)


def raw_sql(where: str, sql: str, args: tuple = ()) -> None:
    """Change the store behind its back (a tampering operator, an old or new slmgraph)."""
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s").replace("learn_", "slmgraph_learn_"), args)
    else:
        import sqlite3

        with sqlite3.connect(where) as conn:
            conn.execute(sql, args)


def rec(key: str, text: str, *, skill="triage", label="x", at: float = 100.0, kind="escalation") -> LearningRecord:
    return LearningRecord(key=key, kind=kind, request=text, skill=skill, label=label, teacher_valid=True, created_at=at)


# -- the contract, on both stores ----------------------------------------------------


async def test_a_record_key_is_stored_once_and_records_read_back_in_time_order(where):
    store = open_store(where)
    assert await store.add(rec("k1", "second", at=200.0))
    assert await store.add(rec("k2", "first", at=100.0))
    assert not await store.add(rec("k1", "a retry of the same run", at=300.0))  # same key: not written
    assert await store.add(rec("k3", "audited", at=250.0, kind="audit"))
    assert await store.add(rec("k4", "other skill", skill="sentiment"))
    assert [r.request for r in await store.records(skill="triage")] == ["first", "second", "audited"]
    assert [r.key for r in await store.records(kinds=["audit"])] == ["k3"]
    assert [r.key for r in await store.records(skill="triage", since=150.0)] == ["k1", "k3"]
    assert await store.count(skill="triage") == {"escalation": 2, "audit": 1}
    assert await store.count() == {"escalation": 3, "audit": 1}
    await store.close()


async def test_stream_counts_add_up_per_minute_skill_and_version(where):
    store = open_store(where)
    for escalated, cost, at in [(True, 0.002, 60.0), (False, 0.0, 61.0), (True, 0.002, 119.0), (False, 0.0, 120.0)]:
        await store.add_outcome("triage", None, escalated, cost, at)
    await store.add_outcome("triage", "v1", False, 0.0, 125.0)
    rows = await store.stream("triage")
    assert [(r["minute"], r["version"], r["runs"], r["escalations"]) for r in rows] == [(1, "", 3, 2), (2, "", 1, 0), (2, "v1", 1, 0)]
    assert rows[0]["cost_usd"] == pytest.approx(0.004)
    await store.close()


async def test_snapshots_are_immutable_and_checked_against_their_hash(where):
    store = open_store(where)
    snap = Snapshot.build("triage", [rec("a", "one"), rec("b", "two")], [rec("c", "three")], {"kept": 3})
    await store.save_snapshot(snap)
    again = Snapshot.build("triage", [rec("a", "one"), rec("b", "two")], [rec("c", "three")], {"kept": 3})
    await store.save_snapshot(again)  # the same content: a no-op
    assert [s["id"] for s in await store.snapshots("triage")] == [snap.id]
    got = await store.snapshot(snap.id[:6])
    assert got.content_hash == snap.content_hash and [r.key for r in got.records] == ["a", "b", "c"]
    with pytest.raises(UnknownVersionError):
        await store.snapshot("ffffffffffff")
    raw_sql(where, "UPDATE learn_snapshots SET body = replace(body, '\"three\"', '\"THREE\"') WHERE id = ?", (snap.id,))
    with pytest.raises(CorruptSnapshotError):
        await store.snapshot(snap.id)
    await store.close()


async def test_promote_and_rollback_keep_a_stack_and_log_why(where):
    store = open_store(where)
    for v in ("triage@m-1", "triage@m-2"):
        await store.save_version(Version(id=v, target="triage", strategy="memory"))
    with pytest.raises(UnknownVersionError):
        await store.promote("triage", "triage@nope")
    assert await store.current("triage") is None
    await store.promote("triage", "triage@m-1", "better")
    await store.promote("triage", "triage@m-1", "again")  # already current: nothing changes
    await store.promote("triage", "triage@m-2", "better still")
    assert await store.history("triage") == ["triage@m-1", "triage@m-2"]
    assert await store.rollback("triage", "drift", only_if="triage@m-1") == "triage@m-2"  # not current: untouched
    assert await store.rollback("triage", "drift", {"rate": 0.5}) == "triage@m-1"
    assert await store.current("triage") == "triage@m-1"
    await store.log(Event(target="triage", kind="cycle", detail={"note": "n"}))
    log = [(e.kind, e.version, e.detail.get("reason")) for e in await store.events("triage")]
    assert log == [("promote", "triage@m-1", "better"), ("promote", "triage@m-2", "better still"),
                   ("rollback", "triage@m-1", "drift"), ("cycle", None, None)]
    assert (await store.events("triage"))[2].detail == {"reason": "drift", "from": "triage@m-2", "rate": 0.5}
    assert [e.kind for e in await store.events(limit=2)] == ["rollback", "cycle"]
    await store.close()


async def test_versions_read_back_and_take_their_evaluation_once_evaluated(where):
    store = open_store(where)
    v = Version(id="triage@m-1", target="triage", strategy="memory", payload={"labels": ["a"]}, created_at=1.0)
    await store.save_version(v)
    await store.save_version(Version(id="sentiment@m-1", target="sentiment", strategy="memory", created_at=2.0))
    v.evaluation = {"promote": True}
    await store.save_version(v)
    assert (await store.version("triage@m-1")).evaluation == {"promote": True}
    assert [x.id for x in await store.versions()] == ["sentiment@m-1", "triage@m-1"]
    assert [x.id for x in await store.versions("triage")] == ["triage@m-1"]
    with pytest.raises(UnknownVersionError):
        await store.version("triage@m-9")
    await store.close()


async def test_shadow_assignments_and_results(where):
    from slmgraph.learn import ShadowResult

    store = open_store(where)
    await store.save_version(Version(id="triage@m-1", target="triage", strategy="memory"))
    assert await store.shadow_of("triage") is None
    with pytest.raises(UnknownVersionError):
        await store.set_shadow("triage", "triage@nope", 0.5)
    await store.set_shadow("triage", "triage@m-1", 0.25, reason="passed the holdout")
    assert await store.shadow_of("triage") == ("triage@m-1", 0.25)

    def res(key: str, at: float) -> ShadowResult:
        return ShadowResult(key=key, target="triage", candidate="triage@m-1", request=key, at=at,
                            served_escalated=True, candidate_escalated=False, candidate_output={"label": "x"})

    assert await store.add_shadow(res("k2", 2.0)) and await store.add_shadow(res("k1", 1.0))
    assert not await store.add_shadow(res("k1", 3.0))  # one result per key
    assert [r.key for r in await store.shadow_results("triage@m-1")] == ["k1", "k2"]
    assert await store.shadow_results("triage@m-2") == []
    await store.set_shadow("triage", None, reason="stop")
    assert await store.shadow_of("triage") is None
    assert [(e.kind, e.version) for e in await store.events("triage")] == [("shadow", "triage@m-1"), ("shadow", None)]
    await store.close()


async def test_a_store_written_by_a_newer_slmgraph_is_refused(where):
    store = open_store(where)
    await store.count()  # creates the tables
    await store.close()
    raw_sql(where, "UPDATE learn_meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(SchemaMismatchError, match="newer"):
        await open_store(where).count()
    with pytest.raises(SchemaMismatchError):
        await open_store(where).add(rec("k", "t").model_copy(update={"schema_version": 99}))


async def test_a_full_learning_cycle_on_the_store(where, tmp_path):
    """Capture (one record per run), a cycle, a promotion served, on either store."""
    from learn_helpers import helpdesk
    from slmgraph.learn import Learner, MemoryStrategy
    from test_learn_loop import METAL, PARAPHRASE, PIN, answers

    ck = where if where.startswith("postgresql://") else True
    graph, store, oracle = helpdesk(tmp_path, answers(), checkpoint=ck, store=open_store(where), refresh_s=0.0)
    for p in [*METAL, *PIN]:
        assert (await graph.ainvoke(p)).status == "escalated"
    assert await store.count(skill="triage") == {"escalation": len(METAL) + len(PIN)}
    cycle = await Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=2)).cycle("triage")
    assert cycle.promoted, cycle.note
    after = await graph.ainvoke(PARAPHRASE)
    assert after.status == "answered" and after.output.label == "change_pin" and after.totals.large_calls == 0
    await store.close()


# -- only a shared database shows these ----------------------------------------------

pg_only = pytest.mark.postgres


@pg_only
def test_two_processes_writing_at_once_keep_every_guarantee(pg_dsn):
    n = 120
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    procs = [subprocess.Popen([sys.executable, str(TESTS / "learn_pg_worker.py"), pg_dsn, "add", name, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for name in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    added = sum(int(o[0].strip()) for o in outs)

    async def check():
        store = PostgresLearningStore(pg_dsn)
        records = await store.records(skill="race")
        events = [e for e in await store.events("race", limit=10_000) if e.kind in ("promote", "rollback")]
        stack = await store.history("race")
        stream = await store.stream("race")
        await store.close()
        return records, events, stack, stream

    records, events, stack, stream = asyncio.run(check())
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == added == n // 2 + 2 * (n // 2)  # every shared key written once
    # Replaying the log gives the stored stack: no promotion or rollback was lost or interleaved.
    replay: list[str] = []
    for e in events:
        if e.kind == "promote":
            replay.append(e.version)
        else:
            assert replay and e.detail["from"] == replay.pop()
            assert e.version == (replay[-1] if replay else None)
    assert replay == stack
    assert sum(r["runs"] for r in stream) == 2 * len(range(0, n, 10))


@pg_only
def test_a_promotion_by_another_process_is_served_by_a_running_graph(pg_dsn, tmp_path):
    from learn_helpers import helpdesk
    from slmgraph.learn import Learner, MemoryStrategy

    from test_learn_loop import METAL, PIN, answers
    from test_learn_loop import PARAPHRASE as paraphrase

    async def learn():
        graph, store, _ = helpdesk(tmp_path, answers(), checkpoint=pg_dsn, store=PostgresLearningStore(pg_dsn), refresh_s=0.0)
        for p in [*METAL, *PIN]:
            await graph.ainvoke(p)
        cycle = await Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=2)).cycle("triage", promote=False)
        assert cycle.report.promote and await store.current("triage") is None
        assert (await graph.ainvoke(paraphrase)).status == "escalated"
        return graph, store, cycle.candidate.id

    async def served(graph, store):
        out = await graph.ainvoke(paraphrase)
        await store.close()
        return out

    loop = asyncio.new_event_loop()
    try:
        graph, store, version = loop.run_until_complete(learn())
        (tmp_path / "slm.toml").write_text(f'checkpoint = "{pg_dsn}"\n')
        cli = subprocess.run([sys.executable, "-m", "slmgraph.cli", "learn", "promote", version, "--reason", "ops",
                              "--config", str(tmp_path / "slm.toml")], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert f"now serving {version}" in cli.stdout
        out = loop.run_until_complete(served(graph, store))
    finally:
        loop.close()
    assert out.status == "answered" and out.output.label == "change_pin" and out.totals.large_calls == 0


@pg_only
def test_the_store_follows_a_postgres_checkpoint_and_prune_leaves_it(pg_dsn, tmp_path, capsys):
    from slmgraph.cli import main
    from slmgraph.learn._config import store_of

    store = store_of(Config(checkpoint=pg_dsn))
    assert isinstance(store, PostgresLearningStore) and "***" in store.where
    assert isinstance(store_of(Config(checkpoint=str(tmp_path / "ck.sqlite"))), SqliteLearningStore)
    assert isinstance(store_of(Config(checkpoint=str(tmp_path / "ck.sqlite"), learning={"store": pg_dsn})),
                      PostgresLearningStore)

    async def fill():
        from learn_helpers import helpdesk
        from slmgraph.learn import Learner

        graph, _, _ = helpdesk(tmp_path, {"I want to change my PIN": "change_pin"}, checkpoint=pg_dsn, store=store)
        assert (await graph.ainvoke("I want to change my PIN", thread_id="old")).status == "escalated"
        snap = await Learner.for_graph(graph, store, holdout=0.0).snapshot("triage")
        await store.close()
        return snap.id

    sid = asyncio.run(fill())
    (tmp_path / "slm.toml").write_text(f'checkpoint = "{pg_dsn}"\n')
    assert main(["data", "list", "--config", str(tmp_path / "slm.toml")]) == 0
    listed = capsys.readouterr().out
    assert sid in listed and "records:   1" in listed and "slm-secret" not in listed
    assert main(["prune", "--older-than", "0s", "--checkpoint", pg_dsn]) == 0
    assert "removed 1 finished thread(s)" in capsys.readouterr().out

    async def left():
        other = PostgresLearningStore(pg_dsn)
        out = (await other.snapshot(sid)).id, await other.count()
        await other.close()
        return out

    assert asyncio.run(left()) == (sid, {"escalation": 1})
