"""Run lifecycle under hostile conditions (RELIABILITY.md rows 19 and 20): storage
writes never block the event loop, even while the checkpointer holds SQLite's write
lock; a cancelled run is marked cancelled and never recovered; an idempotency key
maps a retry to the same run, across a SIGKILL too.

Real SQLite files throughout; the crashes and restarts are real subprocesses
(tests/lifecycle_graph.py).
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

import aiosqlite
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from slmgraph import IdempotencyKeyReusedError
from slmgraph.graphs._durable import SHUTDOWN
from slmgraph.testing import LoopWatchdog

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_spec = importlib.util.spec_from_file_location("lifecycle_graph", HERE / "lifecycle_graph.py")
lg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lg)
_spec = importlib.util.spec_from_file_location("durable_graph", HERE / "durable_graph.py")
dg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dg)


def script(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, str(HERE / "lifecycle_graph.py"), str(workdir), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # a hang guard only


def rows(workdir: Path, table: str = "slmgraph_runs") -> list[sqlite3.Row]:
    with sqlite3.connect(workdir / lg.DB) as c:
        c.row_factory = sqlite3.Row
        return c.execute(f"SELECT * FROM {table}").fetchall()


def status_of(workdir: Path, thread_id: str) -> list[str]:
    return [r["status"] for r in rows(workdir) if r["thread_id"] == thread_id]


async def until(cond, what: str) -> None:
    for _ in range(3000):  # a hang guard only
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- no stall on the loop (row 19) ------------------------------------------------


async def test_cleanup_of_a_cancelled_run_never_blocks_the_loop_while_the_checkpointer_holds_the_lock(tmp_path):
    """The freeze of the hostile review, reproduced: a cancelled run's cleanup writes
    the runs table while another connection holds SQLite's write lock and can only
    commit through the event loop (as LangGraph's async saver does between its
    INSERTs and its COMMIT). A cleanup on the loop would wait for the lock while the
    loop cannot run the commit: the loop would stall until SQLite's busy timeout."""
    hold_s = 0.5
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / lg.DB)) as saver:
        graph = lg.build(tmp_path, checkpoint=saver)
        await graph.ainvoke("warm up", thread_id="warm")
        run = asyncio.create_task(graph.ainvoke("a slow request", thread_id="t"))
        await until(lambda: "a slow request" in lg.calls(tmp_path), "the model call")
        order: list[str] = []
        async with aiosqlite.connect(tmp_path / lg.DB) as other, LoopWatchdog() as dog:
            await other.execute("BEGIN IMMEDIATE")

            async def commit_later() -> None:
                await asyncio.sleep(hold_s)
                await other.commit()
                order.append("lock released")

            committer = asyncio.create_task(commit_later())
            await cancelled(run)
            order.append("run cleaned up")
            await committer
    # The cleanup waited for the lock off the loop: the commit ran meanwhile.
    assert order == ["lock released", "run cleaned up"]
    assert dog.longest_stall_s < hold_s, f"the loop stalled {dog.longest_stall_s:.2f}s"
    assert status_of(tmp_path, "t") == ["cancelled"]
    assert rows(tmp_path, "slmgraph_leases") == []


async def test_failing_and_cancelled_runs_under_load_are_all_recorded_and_release_their_threads(tmp_path):
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / lg.DB)) as saver:
        graph = lg.build(tmp_path, checkpoint=saver)
        async with LoopWatchdog() as dog:
            slow = [asyncio.create_task(graph.ainvoke(f"slow {i}", thread_id=f"slow-{i}")) for i in range(10)]
            rest = [graph.ainvoke(f"fail {i}", thread_id=f"fail-{i}") for i in range(10)]
            rest += [graph.ainvoke(f"fine {i}", thread_id=f"fine-{i}") for i in range(10)]
            finishing = asyncio.gather(*rest, return_exceptions=True)
            await until(lambda: sum("slow" in c for c in lg.calls(tmp_path)) == 10, "the slow calls")
            for task in slow:
                task.cancel()
            outcomes = await finishing
            assert all(isinstance(r, asyncio.CancelledError) for r in await asyncio.gather(*slow, return_exceptions=True))
        pending = await graph.apending_runs(include_failed=True)
    print(f"\nlongest loop stall with 30 runs (10 cancelled, 10 failing): {dog.longest_stall_s * 1000:.0f} ms")
    assert sum(isinstance(o, Exception) for o in outcomes) == 10
    by_thread = {r["thread_id"]: r["status"] for r in rows(tmp_path)}
    assert {by_thread[f"slow-{i}"] for i in range(10)} == {"cancelled"}
    assert {by_thread[f"fail-{i}"] for i in range(10)} == {"failed"}
    assert {by_thread[f"fine-{i}"] for i in range(10)} == {"done"}
    assert rows(tmp_path, "slmgraph_leases") == []
    assert {r.thread_id for r in pending} == {f"fail-{i}" for i in range(10)}  # failed: resumable; cancelled: not


def test_the_loop_watchdog_sees_a_blocking_call() -> None:
    import time

    async def main() -> float:
        async with LoopWatchdog(interval_s=0.005) as dog:
            await asyncio.sleep(0.02)
            time.sleep(0.3)  # blocks the loop
            await asyncio.sleep(0.02)
        return dog.longest_stall_s, dog.longest_own_stall_s

    wall, own = asyncio.run(main())
    assert wall >= 0.25 and own >= 0.25  # a blocked loop is the process's own stall, not a CPU wait


# -- cancelled runs are never re-run (row 20) -------------------------------------


def test_a_run_cancelled_while_it_is_being_recorded_is_cancelled_and_never_recovered(tmp_path):
    proc = script(tmp_path, "cancel-recording")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"outcome": "cancelled"}
    # The process is gone, as after a disconnect and a restart: recovery leaves it.
    assert status_of(tmp_path, "gone") == ["cancelled"]
    assert rows(tmp_path, "slmgraph_leases") == []
    recovered = script(tmp_path, "recover")
    assert json.loads(recovered.stdout) == 0, recovered.stderr
    assert lg.calls(tmp_path) == ["warm up the file"]  # the cancelled request never ran


async def test_a_run_cancelled_while_waiting_for_its_thread_is_cancelled_not_left_accepted(tmp_path):
    graph = lg.build(tmp_path)
    first = asyncio.create_task(graph.ainvoke("slow first", thread_id="t"))
    await until(lambda: "slow first" in lg.calls(tmp_path), "the first run")
    second = asyncio.create_task(graph.ainvoke("second, waiting", thread_id="t"))
    await until(lambda: len(status_of(tmp_path, "t")) == 2, "the second run to be recorded")
    await cancelled(second)
    await cancelled(first)
    assert status_of(tmp_path, "t") == ["cancelled", "cancelled"]
    assert rows(tmp_path, "slmgraph_leases") == []
    assert json.loads(script(tmp_path, "recover").stdout) == 0
    assert lg.calls(tmp_path) == ["slow first"]


async def test_a_run_cancelled_mid_run_is_cancelled_and_its_thread_goes_on(tmp_path):
    graph = lg.build(tmp_path)
    run = asyncio.create_task(graph.ainvoke("slow, then the client leaves", thread_id="t"))
    await until(lambda: len(lg.calls(tmp_path)) == 1, "the model call")
    await cancelled(run)
    (record,) = rows(tmp_path)
    assert record["status"] == "cancelled" and "caller went away" in record["error"]
    assert await graph.apending_runs(include_failed=True) == []
    after = await graph.ainvoke("the next turn", thread_id="t")
    assert after.status == "answered"
    assert json.loads(script(tmp_path, "recover").stdout) == 0
    assert lg.calls(tmp_path) == ["slow, then the client leaves", "the next turn"]


def test_a_run_interrupted_by_shutdown_stays_recoverable(tmp_path):
    async def main() -> None:
        graph = lg.build(tmp_path)
        run = asyncio.create_task(graph.ainvoke("slow once, cut by shutdown", thread_id="t"))
        await until(lambda: len(lg.calls(tmp_path)) == 1, "the model call")
        run.cancel(SHUTDOWN)
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(main())
    assert status_of(tmp_path, "t") == ["running"]  # for the next start's recovery
    assert rows(tmp_path, "slmgraph_leases") == []


# -- idempotency keys -------------------------------------------------------------


async def test_an_idempotency_key_maps_a_retry_to_the_same_run_and_its_result(tmp_path):
    graph = lg.build(tmp_path)
    first = await graph.ainvoke("charge the card", idempotency_key="k-1")
    again = await graph.ainvoke("charge the card", idempotency_key="k-1")
    assert again.run_id == first.run_id and again.answer == first.answer
    assert again.thread_id == first.thread_id  # the run's thread, not a new one
    other = await graph.ainvoke("charge the card", idempotency_key="k-2")
    assert other.run_id != first.run_id
    assert lg.calls(tmp_path) == ["charge the card", "charge the card"]  # k-1 once, k-2 once
    # A fresh graph on the same file (a restarted server) still knows the key, and
    # finds the run's own result after its thread has moved on to another run.
    await graph.ainvoke("a later turn", thread_id=first.thread_id)
    later = await lg.build(tmp_path).ainvoke("charge the card", idempotency_key="k-1")
    assert later.run_id == first.run_id and later.answer == first.answer
    assert len(rows(tmp_path)) == 3
    assert lg.calls(tmp_path) == ["charge the card", "charge the card", "a later turn"]


async def test_a_key_reused_with_another_request_is_refused_and_runs_nothing(tmp_path):
    graph = lg.build(tmp_path)
    first = await graph.ainvoke("charge the card", idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReusedError, match="first used with another request") as info:
        await graph.ainvoke("refund the card", idempotency_key="k-1")
    assert info.value.run_id == first.run_id
    assert lg.calls(tmp_path) == ["charge the card"]  # the second request never ran
    assert len(rows(tmp_path)) == 1


async def test_concurrent_requests_with_one_key_run_once_and_share_the_result(tmp_path):
    graph = lg.build(tmp_path)
    results = await asyncio.gather(*(graph.ainvoke("book the flight", idempotency_key="same") for _ in range(5)))
    assert len({r.run_id for r in results}) == 1 and len({r.answer for r in results}) == 1
    assert lg.calls(tmp_path) == ["book the flight"]


async def test_a_retry_of_a_cancelled_keyed_run_finishes_that_same_run(tmp_path):
    graph = lg.build(tmp_path)
    run = asyncio.create_task(graph.ainvoke("slow request", idempotency_key="retry-me"))
    await until(lambda: len(lg.calls(tmp_path)) == 1, "the model call")
    await cancelled(run)
    assert [r["status"] for r in rows(tmp_path)] == ["cancelled"]
    done = await graph.ainvoke("slow request", idempotency_key="retry-me", thread_id="ignored")
    assert done.status == "answered"
    (record,) = rows(tmp_path)  # the same run, finished; no second run
    assert record["status"] == "done" and record["run_id"] == done.run_id
    assert lg.calls(tmp_path) == ["slow request"] * 2  # the cancelled call, the retry's


async def test_an_idempotency_key_works_without_a_checkpoint_file(tmp_path):
    graph = lg.build(tmp_path, checkpoint=None)  # no file: the keys live in memory
    first = await graph.ainvoke("ask once", idempotency_key="mem")
    assert (await graph.ainvoke("ask once", idempotency_key="mem")).run_id == first.run_id
    assert lg.calls(tmp_path) == ["ask once"]


# -- exactly once across a SIGKILL --------------------------------------------------


def test_a_keyed_run_killed_mid_run_is_finished_once_by_recovery_and_the_retry_gets_its_result(tmp_path):
    proc = script(tmp_path, "keyed-kill", "order-7")
    assert proc.returncode == -signal.SIGKILL
    assert status_of(tmp_path, "keyed") == ["running"]
    recovered = script(tmp_path, "recover")
    assert json.loads(recovered.stdout) == 1, recovered.stderr
    graph = lg.build(tmp_path)
    retry = graph.invoke("please kill the process", idempotency_key="order-7")
    assert retry.status == "answered" and retry.thread_id == "keyed"
    assert lg.calls(tmp_path) == ["please kill the process"] * 2  # the killed call, the recovery's
    assert json.loads(script(tmp_path, "recover").stdout) == 0
    assert status_of(tmp_path, "keyed") == ["done"]


def test_a_retry_after_a_sigkill_resumes_the_dead_run_instead_of_starting_another(tmp_path):
    proc = script(tmp_path, "keyed-kill", "order-8")
    assert proc.returncode == -signal.SIGKILL
    graph = lg.build(tmp_path)
    retry = graph.invoke("please kill the process", idempotency_key="order-8")  # before any recovery
    assert retry.status == "answered" and retry.thread_id == "keyed"
    assert status_of(tmp_path, "keyed") == ["done"]
    assert json.loads(script(tmp_path, "recover").stdout) == 0
    assert lg.calls(tmp_path) == ["please kill the process"] * 2
