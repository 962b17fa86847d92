"""Durable runs (RELIABILITY.md rows 10 and 13): real SIGKILLs at every node boundary
and inside every node, then recovery in another process; side effects run once;
two runs on one thread never interleave, in one process or across processes.

The crashing runs happen in subprocesses (tests/durable_graph.py); this process
rebuilds the same graph on the same SQLite file and recovers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from slmgraph import ThreadBusyError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load_helper():
    spec = importlib.util.spec_from_file_location("durable_graph", HERE / "durable_graph.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


dg = _load_helper()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def crash(workdir: Path, thread_id: str, kill_at: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HERE / "durable_graph.py"), str(workdir), "crash", thread_id, kill_at],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,  # a hang guard only
    )


def comparable(result) -> dict:
    """A result without what legitimately differs between two runs (ids, latency)."""
    data = result.model_dump(exclude={"thread_id", "run_id", "totals"})
    data["ledger"] = [
        (e["node"], e["skill"], e["model"], e["tier"], e["prompt_tokens"], e["completion_tokens"])
        for e in data["ledger"]
    ]
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, for parity."""
    workdir = tmp_path_factory.mktemp("reference")
    result = dg.build(workdir).invoke(dg.REQUEST, thread_id="reference")
    assert result.status == "escalated" and result.answer == dg.ANSWER
    assert dg.lines(workdir, "nodes.log") == ["router", "specialist", "escalation"]
    assert len(dg.lines(workdir, "effects.log")) == 1
    return comparable(result)


#: Where each kill point is: the node it happens inside, if any.
INSIDE = {"in:router": "router", "in:specialist": "specialist", "in:after-effect": "specialist",
          "in:escalation": "escalation"}
FIGURES: dict[str, dict] = {}


@pytest.mark.parametrize("kill_at", dg.KILL_POINTS)
def test_sigkill_then_recover_loses_nothing_and_reruns_no_finished_node(tmp_path: Path, reference: dict,
                                                                        kill_at: str) -> None:
    thread = f"t-{kill_at}"
    proc = crash(tmp_path, thread, kill_at)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])

    # The accepted run is on disk although the process died, whatever the point.
    graph = dg.build(tmp_path)
    pending = graph.pending_runs()
    assert [(r.thread_id, r.request, r.status) for r in pending] == [(thread, dg.REQUEST, pending[0].status)]
    assert pending[0].status in ("accepted", "running")

    results = graph.recover()

    assert len(results) == 1, "the accepted run was lost"
    result = results[0]
    assert result.thread_id == thread and result.run_id == pending[0].run_id
    assert comparable(result) == reference  # parity with the uninterrupted run
    assert graph.pending_runs(include_failed=True) == []
    assert [r.status for r in dg.view(tmp_path / dg.DB).runs()] == ["done"]
    assert graph.get_result(thread) == result  # what recover returned is what is on disk

    nodes = dg.lines(tmp_path, "nodes.log")
    for node in ("router", "specialist", "escalation"):
        expected = 2 if INSIDE.get(kill_at) == node else 1  # only the interrupted node runs again
        assert nodes.count(node) == expected, (kill_at, nodes)
    charges = dg.lines(tmp_path, "effects.log")
    assert len(charges) == 1, charges  # exactly once, even when killed after it
    assert charges[0] == f"charge {thread}:{result.run_id}:charge"
    FIGURES[kill_at] = {"lost": 0, "parity": True, "rerun_finished": 0, "dup_effects": len(charges) - 1}


def test_recover_twice_is_a_no_op_and_a_live_run_is_not_taken(tmp_path: Path) -> None:
    proc = crash(tmp_path, "once", "in:specialist")
    assert proc.returncode == -signal.SIGKILL
    graph = dg.build(tmp_path)
    assert len(graph.recover()) == 1
    assert graph.recover() == []  # nothing left
    assert dg.lines(tmp_path, "nodes.log").count("router") == 1

    # A run accepted by a live process (this one) is not orphaned.
    store = dg.view(tmp_path / dg.DB)
    store.accept("live-run", "live-thread", "x")
    assert [r.run_id for r in graph.pending_runs()] == []


def test_resume_by_thread_id_after_a_crash_before_the_first_checkpoint(tmp_path: Path) -> None:
    proc = crash(tmp_path, "early", "accepted")
    assert proc.returncode == -signal.SIGKILL
    graph = dg.build(tmp_path)
    assert graph.get_result("early") is None  # LangGraph has nothing for this thread
    result = graph.resume("early")  # the runs table does
    assert result.status == "escalated" and result.answer == dg.ANSWER


async def test_two_runs_on_one_thread_in_one_process_are_serialised(tmp_path: Path) -> None:
    graph = dg.build(tmp_path, slow_s=0.05)
    first, second = await asyncio.gather(
        graph.ainvoke(dg.REQUEST, thread_id="same"), graph.ainvoke(dg.REQUEST, thread_id="same"),
    )
    assert first.status == second.status == "escalated"
    assert first.run_id != second.run_id
    assert _interleavings(tmp_path, "same") == 0
    assert dg.lines(tmp_path, "nodes.log") == ["router", "specialist", "escalation"] * 2


async def test_a_busy_thread_is_rejected_with_a_typed_error(tmp_path: Path) -> None:
    holder = dg.build(tmp_path, slow_s=0.2)
    rejecting = dg.build(tmp_path, on_busy="reject")
    running = asyncio.create_task(holder.ainvoke(dg.REQUEST, thread_id="busy"))
    while not dg.lines(tmp_path, "nodes.log"):
        await asyncio.sleep(0.01)
    with pytest.raises(ThreadBusyError, match="'busy' is busy") as info:
        await rejecting.ainvoke(dg.REQUEST, thread_id="busy")
    assert info.value.transient
    assert (await running).status == "escalated"
    statuses = sorted(r.status for r in dg.view(tmp_path / dg.DB).runs("busy"))
    assert statuses == ["done", "rejected"]
    assert _interleavings(tmp_path, "busy") == 0

    waiting = dg.build(tmp_path, slow_s=0.2, busy_timeout_s=0.0)
    blocker = asyncio.create_task(holder.ainvoke(dg.REQUEST, thread_id="busy"))
    while dg.lines(tmp_path, "nodes.log").count("router") < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(ThreadBusyError, match="still busy after waiting"):
        await waiting.ainvoke(dg.REQUEST, thread_id="busy")
    await blocker


def test_two_processes_on_one_thread_never_interleave(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "durable_graph.py"), str(tmp_path), "slow", "shared"],
            cwd=REPO, env=_env(DURABLE_TEST_TAG=tag), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("A", "B")
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)  # a hang guard only
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["status"] for o in outs] == ["escalated", "escalated"]
    assert outs[0]["run_id"] != outs[1]["run_id"]

    # Node executions come in whole runs: A's three nodes, then B's (or B's, then A's).
    nodes = dg.lines(tmp_path, "nodes.log")
    tags = [line.split()[1] for line in nodes]
    assert len(tags) == 6 and tags[:3] == [tags[0]] * 3 and tags[3:] == [tags[3]] * 3 and tags[0] != tags[3], nodes
    assert _interleavings(tmp_path, "shared") == 0
    assert {r.status for r in dg.view(tmp_path / dg.DB).runs("shared")} == {"done"}


def _interleavings(workdir: Path, thread: str) -> int:
    """How often the run id in the thread's checkpoints, in write order, goes back to
    a run seen before: 0 when each run's checkpoints are contiguous."""
    graph = dg.build(workdir)

    async def history() -> list[str]:
        async with graph.runner._compiled() as compiled:
            snaps = [s async for s in compiled.aget_state_history({"configurable": {"thread_id": thread}})]
        return [s.values.get("run_id", "") for s in reversed(snaps) if s.values.get("run_id")]

    ids = asyncio.run(history()) if not _in_loop() else _run_in_thread(history)
    seen, back = [], 0
    for run_id in ids:
        if seen and run_id != seen[-1] and run_id in seen:
            back += 1
        if not seen or run_id != seen[-1]:
            seen.append(run_id)
    assert len(set(ids)) >= 1
    return back


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(fn):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(fn())).result()


def test_a_dead_processes_lease_is_freed_at_once(tmp_path: Path) -> None:
    store = dg.view(tmp_path / "leases.sqlite")
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    store.acquire("t", "mine", 60.0)
    with sqlite3.connect(tmp_path / "leases.sqlite") as c:
        c.execute("UPDATE slmgraph_leases SET pid = ?, run_id = 'ghost'", (dead_pid,))
    assert store.acquire("t", "other", 60.0) is None  # the ghost's process is gone
    assert store.acquire("t", "third", 60.0) == "other"  # a live holder keeps it
    store.release("t", "other")
    assert store.acquire("t", "third", 60.0) is None


async def test_effect_runs_once_per_key_and_returns_the_stored_value() -> None:
    from slmgraph import RunContext, UserError
    from slmgraph.testing import ScriptedModel

    ctx = RunContext.fresh({"small": ScriptedModel([])}, None, frozenset())
    seen: list[str] = []

    async def send(key: str) -> tuple:
        seen.append(key)
        return ("sent", len(seen))

    first = await ctx.effect("mail", send)
    again = await ctx.effect("mail", send)
    other = await ctx.effect("sms", lambda key: seen.append(key) or "ok")
    assert first == again == ["sent", 1]  # JSON round trip: the same value on replay
    assert other == "ok" and len(seen) == 2 and seen[0].endswith(":mail")
    with pytest.raises(UserError, match="not JSON-able"):
        await ctx.effect("bad", lambda key: object())
    with pytest.raises(UserError, match="non-empty string key"):
        await ctx.effect("", send)


async def test_a_run_whose_lease_is_taken_over_stops_typed(tmp_path: Path) -> None:
    graph = dg.build(tmp_path, slow_s=0.4, lease_ttl_s=0.15)
    run = asyncio.create_task(graph.ainvoke(dg.REQUEST, thread_id="stolen"))
    while not dg.lines(tmp_path, "nodes.log"):
        await asyncio.sleep(0.01)
    with sqlite3.connect(tmp_path / dg.DB) as c:  # another owner takes the thread
        c.execute("UPDATE slmgraph_leases SET run_id = 'intruder', expires = expires + 3600")
    with pytest.raises(ThreadBusyError, match="lease expired and taken over"):
        await run
    (record,) = dg.view(tmp_path / dg.DB).runs("stolen")
    assert record.status == "failed" and "ThreadBusyError" in record.error


async def test_a_graph_on_a_shared_sqlite_saver_keeps_its_runs_in_that_file(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from slmgraph.graphs import SLMGraph

    spec = dg.build(tmp_path).spec
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "shared.sqlite")) as saver:
        await saver.setup()
        result = await SLMGraph(spec, checkpoint=saver, name="served").ainvoke(dg.REQUEST, thread_id="s")
    (record,) = dg.view(tmp_path / "shared.sqlite").runs()
    assert (record.run_id, record.status, record.thread_id) == (result.run_id, "done", "s")


def test_cli_recover_finishes_interrupted_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    from slmgraph import cli
    from slmgraph.graphs import _blueprints

    assert crash(tmp_path, "cli", "in:specialist").returncode == -signal.SIGKILL
    monkeypatch.setattr(_blueprints, "graph_from_config", lambda name, cfg: dg.build(tmp_path))
    assert cli.main(["recover", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["interrupted"] == 1 and out["left"] == []
    assert [r["status"] for r in out["finished"]] == ["escalated"]
    assert cli.main(["recover"]) == 0
    assert "interrupted runs: 0" in capsys.readouterr().out


def test_two_processes_recovering_at_once_finish_each_run_exactly_once(tmp_path: Path) -> None:
    points = {"a": "in:router", "b": "ckpt:1", "c": "in:after-effect", "d": "accepted"}
    for thread, point in points.items():
        assert crash(tmp_path, thread, point).returncode == -signal.SIGKILL
    assert len(dg.build(tmp_path).pending_runs()) == 4
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "durable_graph.py"), str(tmp_path), "recover", "-"],
                         cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    finished: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=300)  # a hang guard only
        assert p.returncode == 0, err[-2000:]
        finished += json.loads(out.strip().splitlines()[-1])
    assert sorted(finished) == sorted(points)  # each run finished once, by one of the two
    assert {r.status for r in dg.view(tmp_path / dg.DB).runs()} == {"done"}
    nodes = dg.lines(tmp_path, "nodes.log")
    assert nodes.count("router") == 5 and nodes.count("specialist") == 5 and nodes.count("escalation") == 4
    assert len(dg.lines(tmp_path, "effects.log")) == 4  # one charge per run


def test_the_in_memory_run_store_stays_bounded_and_indexes_threads() -> None:
    from slmgraph.graphs._runs_memory import MemoryRunStore

    store = dg.StoreView(MemoryRunStore())
    store._store.keep_finished = 5
    for i in range(40):
        thread = f"t{i % 3}"
        assert store.begin(f"r{i}", thread, "hello", ttl_s=30) is None
        store.finish(f"r{i}", thread, "done")
    assert store.begin("live", "t0", "still running", ttl_s=30) is None
    assert len(store.runs()) <= 2 * store._store.keep_finished + 1
    assert "live" in {r.run_id for r in store.runs("t0")}
    assert all(r.thread_id == "t1" for r in store.runs("t1"))
    assert store.get("r0") is None and store.get("r39").status == "done"


async def test_a_server_finishes_its_own_interrupted_runs_when_it_starts(tmp_path: Path) -> None:
    from slmgraph.serve._host import GraphHost

    # Two runs killed mid-graph: one on a thread of the served graph "pay", one on
    # another graph's thread in the same file.
    assert crash(tmp_path, "pay/conv-1", "in:specialist").returncode == -signal.SIGKILL
    assert crash(tmp_path, "other/conv-2", "in:specialist").returncode == -signal.SIGKILL
    host = GraphHost({"pay": dg.build(tmp_path)}, max_concurrency=2, max_queue=4)
    await host.start()
    try:
        assert host.recovery is not None
        assert await host.recovery == 1
        status = {r.thread_id: r.status for r in dg.view(tmp_path / dg.DB).runs()}
        assert status["pay/conv-1"] == "done"
        assert status["other/conv-2"] == "running"  # not this graph's to finish
        result = await host.graph("pay").aget_result("pay/conv-1")
        assert result is not None and result.answer == dg.ANSWER
        assert len(dg.lines(tmp_path, "effects.log")) == 1  # the recovered run charged once; the other not at all
    finally:
        await host.aclose()
