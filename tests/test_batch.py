"""``slmgraph batch``: resumable after SIGKILL, bad rows answered, ids kept; on Ray
with a worker killed; on a shared PostgreSQL store."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import scale_graph  # noqa: E402


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SCALE_TEST_DIR": str(workdir), "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), **extra}


def _write_rows(path: Path, n: int) -> list[str]:
    texts = [f"request {i}" + (" escalate" if i % 4 == 0 else "") for i in range(n)]
    with path.open("w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"ticket": f"T{i:03d}", "text": text}) + "\n")
    return texts


def _batch(workdir: Path, *args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "slmgraph.cli", "batch", "scale_graph:make", str(workdir / "in.jsonl"),
           "--out", str(workdir / "out.jsonl"), "--input-col", "text", "--id-col", "ticket", "--no-progress", *args]
    return subprocess.Popen(cmd, env=env or _env(workdir), cwd=workdir, text=True, **popen)


def _out(workdir: Path) -> list[dict]:
    path = workdir / "out.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _done_in_store(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT thread_id FROM slmgraph_runs WHERE status = 'done'").fetchall()
    return {t.rsplit("/", 1)[1] for (t,) in rows}


def test_batch_killed_halfway_and_rerun_has_every_row_once_and_reruns_none(tmp_path):
    texts = _write_rows(tmp_path / "in.jsonl", 60)
    db = tmp_path / "c.sqlite"
    env = _env(tmp_path, SCALE_TEST_SLOW="0.1")
    first = _batch(tmp_path, "--checkpoint", str(db), "--concurrency", "4", env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_out(tmp_path)) < 30:
        assert first.poll() is None, "the job ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    finished = {r["ticket"] for r in _out(tmp_path)} | _done_in_store(db)
    assert 30 <= len(finished) < 60
    calls_before = collections.Counter(scale_graph.lines(tmp_path, "calls.log"))

    second = _batch(tmp_path, "--checkpoint", str(db), "--concurrency", "4", "--json", env=env, stdout=subprocess.PIPE)
    summary = json.loads(second.communicate(timeout=300)[0])
    assert second.returncode == 0
    rows = _out(tmp_path)
    assert sorted(r["ticket"] for r in rows) == [f"T{i:03d}" for i in range(60)]  # every row, once
    calls_after = collections.Counter(scale_graph.lines(tmp_path, "calls.log"))
    by_ticket = {f"T{i:03d}": t for i, t in enumerate(texts)}
    for ticket in finished:  # no finished row ran again
        assert calls_after[by_ticket[ticket]] == calls_before[by_ticket[ticket]], ticket
    # Each effect once per row, under one idempotency key; only a row in flight at the
    # kill may have run it a second time (killed after the effect, before its result
    # was stored), with the same key, so the external system drops the repeat.
    effects = collections.Counter(scale_graph.lines(tmp_path, "effects.log"))
    assert set(effects) == set(texts)
    assert all(n == 1 for t, n in effects.items() if t in {by_ticket[k] for k in finished})
    assert all(len(k) == 1 for k in scale_graph.keys(tmp_path).values())
    assert summary["rows"] == 60 and summary["statuses"] == {"answered": 45, "escalated": 15}
    assert summary["escalation_rate"] == pytest.approx(0.25)
    assert summary["cost_usd"] > 0 and summary["baseline_usd"] > 0
    assert summary["saved_usd"] == pytest.approx(summary["baseline_usd"] - summary["cost_usd"])
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))


def test_bad_rows_are_reported_by_number_and_never_stop_the_job(tmp_path):
    lines = [
        json.dumps({"ticket": "a", "text": "fine one"}),
        "{not json",
        json.dumps({"ticket": "b"}),
        json.dumps({"ticket": "c", "text": "   "}),
        json.dumps({"ticket": "a", "text": "same id again"}),
        json.dumps({"ticket": "d", "text": "please fail"}),
        json.dumps({"ticket": "e", "text": "fine two"}),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proc = _batch(tmp_path, "--checkpoint", str(tmp_path / "c.sqlite"), "--json", stdout=subprocess.PIPE)
    summary = json.loads(proc.communicate(timeout=120)[0])
    assert proc.returncode == 0
    out = {r["ticket"]: r for r in _out(tmp_path)}
    assert sorted(out) == ["2", "a", "b", "c", "d", "e"]  # a row that is not JSON keeps its row number as id
    assert out["a"]["status"] == out["e"]["status"] == "answered"
    assert out["2"]["status"] == out["b"]["status"] == out["c"]["status"] == "bad_input"
    assert out["d"]["status"] == "error" and "ModelUnavailableError" in out["d"]["error"]
    bad = "\n".join(summary["bad_rows"])
    for text in ("row 2 is not JSON", "row 3 has no 'text' field", "row 4: EmptyRequestError",
                 "row 5: repeats id 'a' of row 1", "row 6: ModelUnavailableError"):
        assert text in bad
    assert summary["statuses"] == {"answered": 2, "bad_input": 3, "error": 1}


def test_a_csv_without_the_input_column_is_one_clear_error_and_runs_nothing(tmp_path):
    (tmp_path / "in.csv").write_text("ticket,body\nT1,hello\n")
    proc = subprocess.run(
        [sys.executable, "-m", "slmgraph.cli", "batch", "scale_graph:make", str(tmp_path / "in.csv"),
         "--out", str(tmp_path / "out.jsonl"), "--checkpoint", str(tmp_path / "c.sqlite"), "--no-progress"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "slmgraph: error: ConfigError: config field 'input_col': "
        f"{tmp_path / 'in.csv'} has no 'input' column (its columns: 'ticket', 'body'); "
        "name the request column with --input-col"
    ]
    assert not (tmp_path / "out.jsonl").exists() and scale_graph.lines(tmp_path, "calls.log") == []


@pytest.mark.ray
def test_ray_batch_with_a_worker_killed_has_every_row_once(tmp_path):
    texts = _write_rows(tmp_path / "in.jsonl", 24)
    env = _env(tmp_path, SCALE_TEST_SLOW="0.05", SCALE_TEST_KILL_ON=texts[7])
    proc = _batch(tmp_path, "--checkpoint", str(tmp_path / "c.sqlite"), "--ray", "auto", "--workers", "2",
                  "--shard-size", "6", "--json", env=env, stdout=subprocess.PIPE)
    stdout = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0
    summary = json.loads(stdout[stdout.index("\n{") if not stdout.startswith("{") else 0:])  # Ray's raylet may print first
    assert (tmp_path / f"killed-{texts[7]}").exists()  # a worker really died mid-row
    assert sorted(r["ticket"] for r in _out(tmp_path)) == [f"T{i:03d}" for i in range(24)]
    effects = collections.Counter(scale_graph.lines(tmp_path, "effects.log"))
    assert set(effects) == set(texts)
    assert all(len(k) == 1 for k in scale_graph.keys(tmp_path).values())  # a repeat keeps its key
    repeated = {t for t, n in effects.items() if n > 1}
    assert repeated <= set(texts[6:12])  # only rows of the killed worker's shard, in flight with it
    calls = collections.Counter(scale_graph.lines(tmp_path, "calls.log"))
    assert calls[texts[7]] == 2  # the killed call and its retry
    assert all(calls[t] == 1 for t in texts[:6] + texts[12:])  # other shards: nothing redone
    assert summary["rows"] == 24 and summary["statuses"] == {"answered": 18, "escalated": 6}


@pytest.mark.postgres
def test_batch_on_postgres_resumes_from_the_shared_store(pg_dsn, tmp_path):
    texts = _write_rows(tmp_path / "in.jsonl", 12)
    proc = _batch(tmp_path, "--checkpoint", pg_dsn, "--json", stdout=subprocess.PIPE)
    assert json.loads(proc.communicate(timeout=120)[0])["rows"] == 12
    # The output file is lost: the rerun reads every row back from the database.
    (tmp_path / "out.jsonl").unlink()
    proc = _batch(tmp_path, "--checkpoint", pg_dsn, "--json", stdout=subprocess.PIPE)
    assert json.loads(proc.communicate(timeout=120)[0])["rows"] == 12
    assert sorted(r["ticket"] for r in _out(tmp_path)) == [f"T{i:03d}" for i in range(12)]
    assert collections.Counter(scale_graph.lines(tmp_path, "calls.log")) == collections.Counter(texts)  # none re-run


async def _statuses_scenario(store) -> dict[str, str]:
    """Three threads with runs (one with two), one unasked; ``statuses`` of two of
    them and of one without runs."""
    await store.begin("r1", "batch/j/a", "x", 30.0)
    await store.finish("r1", "batch/j/a", "failed", "boom")
    await store.begin("r2", "batch/j/a", "x", 30.0)  # the newer run of thread a
    await store.finish("r2", "batch/j/a", "done")
    await store.begin("r3", "batch/j/b", "y", 30.0)
    await store.begin("r4", "batch/j/c", "z", 30.0)  # not asked about
    await store.finish("r4", "batch/j/c", "done")
    try:
        return await store.statuses(["batch/j/a", "batch/j/b", "batch/j/none"])
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_statuses_answers_the_asked_threads_with_their_newest_run(kind, tmp_path):
    import asyncio

    from slmgraph.graphs._runs_memory import MemoryRunStore
    from slmgraph.graphs._runs_sqlite import SqliteRunStore

    store = MemoryRunStore() if kind == "memory" else SqliteRunStore(tmp_path / "runs.sqlite")
    assert asyncio.run(_statuses_scenario(store)) == {"batch/j/a": "done", "batch/j/b": "running"}


@pytest.mark.postgres
def test_statuses_on_postgres_answers_the_asked_threads_with_their_newest_run(pg_dsn):
    import asyncio

    from slmgraph.storage import PostgresRunStore, pg_pool

    async def scenario():
        async with pg_pool(pg_dsn, max_size=2) as pool:
            return await _statuses_scenario(PostgresRunStore(pool, pg_dsn))

    assert asyncio.run(scenario()) == {"batch/j/a": "done", "batch/j/b": "running"}
