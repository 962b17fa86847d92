"""Checkpointer failure (RELIABILITY.md row 11): a write that raises (database
locked, disk full) or silently drops the state stops the run with a typed
CheckpointError, marks it failed, never reports success; once the fault clears,
the run resumes from its last good checkpoint."""

from __future__ import annotations

import errno
import importlib.util
import sqlite3
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from slmgraph import CheckpointError

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("durable_graph", HERE / "durable_graph.py")
dg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dg)


class Fault:
    """Makes the SQLite saver's writes fail at one step until cleared."""

    def __init__(self, monkeypatch, *, step: int, exc: Exception, writes: bool = False) -> None:
        self.step, self.exc, self.on = step, exc, True
        self.raised = 0
        put, put_writes = AsyncSqliteSaver.aput, AsyncSqliteSaver.aput_writes
        self.last_step = None

        async def aput(saver, config, checkpoint, metadata, new_versions):
            self.last_step = metadata.get("step")
            if self.on and not writes and metadata.get("step") == self.step:
                self.raised += 1
                raise self.exc
            return await put(saver, config, checkpoint, metadata, new_versions)

        async def aput_writes(saver, config, writes_, task_id, task_path=""):
            if self.on and writes and self.last_step == self.step:
                self.raised += 1
                raise self.exc
            return await put_writes(saver, config, writes_, task_id, task_path)

        monkeypatch.setattr(AsyncSqliteSaver, "aput", aput)
        monkeypatch.setattr(AsyncSqliteSaver, "aput_writes", aput_writes)


@pytest.fixture()
def reference(tmp_path: Path):
    ref = tmp_path / "ref"
    ref.mkdir()
    return dg.build(ref).invoke(dg.REQUEST, thread_id="ref")


FAULTS = [
    ("locked-after-router", 1, sqlite3.OperationalError("database is locked"), False),
    ("disk-full-after-specialist", 2, OSError(errno.ENOSPC, "No space left on device"), False),
    ("locked-final-checkpoint", 3, sqlite3.OperationalError("database is locked"), False),
    ("disk-full-node-writes", 1, sqlite3.OperationalError("database or disk is full"), True),
]


@pytest.mark.parametrize("name,step,exc,writes", FAULTS, ids=[f[0] for f in FAULTS])
async def test_a_failing_checkpoint_write_fails_loudly_then_resumes(
    tmp_path: Path, monkeypatch, reference, name, step, exc, writes
) -> None:
    fault = Fault(monkeypatch, step=step, exc=exc, writes=writes)
    graph = dg.build(tmp_path)

    with pytest.raises(CheckpointError, match="could not persist the state of thread 'faulty'") as info:
        await graph.ainvoke(dg.REQUEST, thread_id="faulty")
    assert fault.raised >= 1
    assert info.value.thread_id == "faulty" and type(exc).__name__ in info.value.cause
    assert isinstance(info.value.__cause__, type(exc))

    (run,) = dg.view(tmp_path / dg.DB).runs("faulty")
    assert run.status == "failed" and "CheckpointError" in (run.error or "")
    # A reader sees only what is on disk: the last good checkpoint plus node writes
    # saved beside it; that may already hold the answer, but the run is not "done"
    # until its final checkpoint is, and the caller got the error, not a result.
    partial = await graph.aget_result("faulty")
    assert partial is None or partial.status in ("running", "escalated")

    fault.on = False  # the disk has room again / the lock is gone
    result = await graph.aresume("faulty")
    assert result.status == "escalated" and result.answer == dg.ANSWER
    assert result.output_json == reference.output_json and result.draft == reference.draft
    assert [e.node for e in result.ledger] == [e.node for e in reference.ledger]
    assert dg.view(tmp_path / dg.DB).get(run.run_id).status == "done"
    assert len(dg.lines(tmp_path, "effects.log")) == 1  # the charge never repeats


async def test_recover_include_failed_picks_up_a_run_failed_by_storage(tmp_path: Path, monkeypatch) -> None:
    fault = Fault(monkeypatch, step=2, exc=sqlite3.OperationalError("database is locked"))
    graph = dg.build(tmp_path)
    with pytest.raises(CheckpointError):
        await graph.ainvoke(dg.REQUEST, thread_id="later")
    assert await graph.apending_runs() == []  # failed, not orphaned
    assert [r.thread_id for r in await graph.apending_runs(include_failed=True)] == ["later"]
    fault.on = False
    (result,) = await graph.arecover(include_failed=True)
    assert result.status == "escalated"
    assert dg.lines(tmp_path, "nodes.log").count("router") == 1  # finished nodes not re-run


class ForgetfulSaver(InMemorySaver):
    """Says it saved everything after the specialist but drops it: the silent failure."""

    last_step = -1

    async def aput(self, config, checkpoint, metadata, new_versions):
        if metadata.get("step", 0) >= 3:
            return {"configurable": {**config["configurable"], "checkpoint_id": checkpoint["id"]}}
        self.last_step = metadata.get("step", 0)
        return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        if self.last_step >= 2:
            return None
        return await super().aput_writes(config, writes, task_id, task_path)


class LockedSaver(InMemorySaver):
    async def aput(self, config, checkpoint, metadata, new_versions):
        raise sqlite3.OperationalError("database is locked")


async def test_a_saver_that_drops_state_never_yields_a_success(tmp_path: Path) -> None:
    graph = dg.build(tmp_path).__class__(dg.build(tmp_path).spec, checkpoint=ForgetfulSaver(), name="forgetful")
    with pytest.raises(CheckpointError, match="final state is not in the checkpoint"):
        await graph.ainvoke(dg.REQUEST, thread_id="lost")


async def test_a_sqlite_saver_that_drops_the_final_checkpoint_never_yields_a_success(tmp_path: Path, monkeypatch) -> None:
    """With the runs table in the checkpoint's file, the final checkpoint is confirmed
    in that file when the run is marked done (no read-back through the saver): a
    saver that says it wrote it but did not ends the run failed, not done."""
    put = AsyncSqliteSaver.aput

    async def aput(saver, config, checkpoint, metadata, new_versions):
        if metadata.get("step", 0) >= 3:  # "saved": the id it would have had, nothing written
            return {"configurable": {**config["configurable"], "checkpoint_id": checkpoint["id"]}}
        return await put(saver, config, checkpoint, metadata, new_versions)

    monkeypatch.setattr(AsyncSqliteSaver, "aput", aput)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        await saver.setup()
        graph = dg.build(tmp_path).with_checkpoint(saver)
        with pytest.raises(CheckpointError, match="final state is not in the checkpoint") as err:
            await graph.ainvoke(dg.REQUEST, thread_id="dropped")
        assert err.value.thread_id == "dropped"
        (run,) = await graph.apending_runs(include_failed=True)
        assert run.status == "failed" and "final state" in (run.error or "")
        monkeypatch.setattr(AsyncSqliteSaver, "aput", put)  # the saver is mended
        result = await graph.aresume("dropped")
        assert result.status == "escalated" and (await graph.apending_runs(include_failed=True)) == []


async def test_a_shared_saver_lends_its_connection_to_the_runs_table(tmp_path: Path) -> None:
    import threading

    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        await saver.setup()
        graph = dg.build(tmp_path).with_checkpoint(saver)
        before = set(threading.enumerate())  # other tests' stores may still have theirs
        for i in range(4):
            assert (await graph.ainvoke(dg.REQUEST, thread_id=f"t{i}")).status == "escalated"
        store = graph.runner.sessions.store
        assert store._lent is not None and store._conn is None  # the saver's connection, no second one
        assert not [t for t in threading.enumerate() if t.name.startswith("slmgraph-runs") and t not in before]
        assert {r.status for r in await store.runs()} == {"done"}
        # The saver's connection is left as it was: no transaction open, its row factory and level kept.
        raw = saver.conn._conn
        assert not raw.in_transaction and raw.row_factory is None
        assert (await (await saver.conn.execute("PRAGMA synchronous")).fetchone())[0] == 2
        # Its own writes still commit: a second connection sees every run and checkpoint.
        with sqlite3.connect(tmp_path / "c.sqlite") as other:
            assert other.execute("SELECT count(*) FROM slmgraph_runs WHERE status = 'done'").fetchone()[0] == 4
            assert other.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0] == 4


async def test_an_unknown_saver_connection_gets_one_runs_worker_and_connection(tmp_path: Path, monkeypatch) -> None:
    import threading

    from slmgraph.graphs import _runs_sqlite

    monkeypatch.setattr(_runs_sqlite.SaverThread, "of", classmethod(lambda cls, saver: None))
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
        await saver.setup()
        graph = dg.build(tmp_path).with_checkpoint(saver)
        before = set(threading.enumerate())
        for i in range(4):
            assert (await graph.ainvoke(dg.REQUEST, thread_id=f"t{i}")).status == "escalated"
        store = graph.runner.sessions.store
        conn = store._conn
        await graph.ainvoke(dg.REQUEST, thread_id="t4")
        assert store._lent is None and store._conn is conn is not None  # not reopened for each run
        workers = [t for t in threading.enumerate() if t.name.startswith("slmgraph-runs") and t not in before]
        assert len(workers) == 1  # one worker thread, not one per run
        assert {r.status for r in await store.runs()} == {"done"}


async def test_any_checkpointer_failure_is_typed(tmp_path: Path) -> None:
    spec = dg.build(tmp_path).spec
    graph = dg.build(tmp_path).__class__(spec, checkpoint=LockedSaver(), name="locked")
    with pytest.raises(CheckpointError, match="database is locked"):
        await graph.ainvoke(dg.REQUEST, thread_id="t")
    assert dg.lines(tmp_path, "nodes.log") == []  # stopped at the input checkpoint, before any node
