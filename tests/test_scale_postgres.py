"""PostgreSQL as the shared store, against a real server started by the tests.

Processes are real: serve processes on one database, one SIGKILLed mid-run; two
processes on one thread; ``recover()`` in a third process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from slmgraph import ConfigError
from slmgraph.cli import main
from slmgraph.config import Config
from slmgraph.storage import StorageAuthError, StorageNotFoundError, StorageUnavailableError

pytestmark = pytest.mark.postgres

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import scale_graph  # noqa: E402


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SCALE_TEST_DIR": str(workdir), "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), **extra}


def _graph(dsn: str):
    return scale_graph.make(config=Config(checkpoint=dsn))


def _runs(dsn: str, thread: str | None = None) -> list[dict]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        if thread is None:
            return conn.execute("SELECT * FROM slmgraph_runs ORDER BY seq").fetchall()
        return conn.execute("SELECT * FROM slmgraph_runs WHERE thread_id = %s ORDER BY seq", (thread,)).fetchall()


# -- bad input: one clear typed error each, nothing lost -------------------------


def test_bad_databases_each_get_one_typed_error(pg, pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_TEST_DIR", str(tmp_path))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cases = [
        (f"postgresql://slm:x@127.0.0.1:{dead}/db", StorageUnavailableError, "cannot reach the server"),
        (pg.dsn(pg_dsn.rsplit("/", 1)[1], password="wrong"), StorageAuthError, "refused the credentials"),
        (pg.dsn("no_such_db"), StorageNotFoundError, "does not exist"),
    ]
    for dsn, kind, words in cases:
        with pytest.raises(kind) as info:
            _graph(dsn).invoke("hello")
        assert words in str(info.value)
        assert "wrong" not in str(info.value) and "slm-secret" not in str(info.value)  # password hidden
    with pytest.raises(ConfigError) as info:
        _graph(f"postgresql://slm:pw@127.0.0.1:{pg.port}x/db")
    assert "not a valid PostgreSQL DSN" in str(info.value) and "pw@" not in str(info.value)
    assert scale_graph.lines(tmp_path, "calls.log") == []  # nothing ran anywhere
    # The CLI: one line, the error's type and message, no traceback; exit code 2.
    proc = subprocess.run(
        [sys.executable, "-m", "slmgraph.cli", "prune", "--older-than", "1d", "--checkpoint", pg.dsn("no_such_db")],
        capture_output=True, text=True, env=_env(tmp_path),
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("slmgraph: error: StorageNotFoundError:") and "Traceback" not in proc.stderr
    # A server on a wrong password never starts, and says why in one line.
    serve = subprocess.run(
        [sys.executable, "-c", _SERVE, "serve", "scale", "--port", str(_free_port()), "--checkpoint",
         pg.dsn("postgres", password="wrong")],
        capture_output=True, text=True, env=_env(tmp_path), timeout=120,
    )
    assert serve.returncode == 2 and "Traceback" not in serve.stderr
    assert serve.stderr.strip().splitlines()[-1].startswith("slmgraph: error: StorageAuthError:")


def test_runs_on_postgres_survive_a_server_restart(pg, pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_TEST_DIR", str(tmp_path))
    graph = _graph(pg_dsn)

    async def scenario():
        async with graph.runner.pg.session():
            first = await graph.ainvoke("one", thread_id="t1")
            await asyncio.to_thread(pg.restart)  # every pooled connection is now dead
            second = await graph.ainvoke("two", thread_id="t2")
            return first, second, await graph.aget_result("t1")

    first, second, again = asyncio.run(scenario())
    assert first.status == second.status == again.status == "answered"
    assert [r["status"] for r in _runs(pg_dsn)] == ["done", "done"]
    assert scale_graph.lines(tmp_path, "effects.log") == ["one", "two"]


def test_a_failed_run_is_recorded_failed_and_resumable(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_TEST_DIR", str(tmp_path))
    graph = _graph(pg_dsn)
    with pytest.raises(Exception):
        graph.invoke("please fail", thread_id="tf")
    assert [r["status"] for r in _runs(pg_dsn, "tf")] == ["failed"]
    assert [r.thread_id for r in graph.pending_runs(include_failed=True)] == ["tf"]


# -- many processes on one database ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVE = (
    "import sys, scale_graph; from slmgraph.graphs import register_graph; "
    "register_graph('scale', scale_graph.make); from slmgraph.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _serve(dsn: str, port: int, workdir: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SERVE, "serve", "scale", "--port", str(port), "--checkpoint", dsn,
         "--log-level", "warning", *extra],
        env=_env(workdir, **env), stdout=subprocess.DEVNULL, stderr=open(workdir / f"serve-{port}.log", "w"),
    )


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not come up")


def _chat(port: int, text: str, conversation: str, timeout: float = 60.0) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "scale", "messages": [{"role": "user", "content": text}]},
        headers={"X-Conversation-Id": conversation}, timeout=timeout,
    )


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_server_run_is_finished_by_the_other_exactly_once(pg_dsn, tmp_path):
    env = {"SCALE_TEST_SLOW": "1.5", "SCALE_TEST_TTL": "2"}
    pa, pb = _free_port(), _free_port()
    a = _serve(pg_dsn, pa, tmp_path, **env)
    b = _serve(pg_dsn, pb, tmp_path, **env)
    try:
        _wait_healthy(pa, a)
        _wait_healthy(pb, b)
        assert _chat(pb, "warm up", "w").status_code == 200
        errors: list[BaseException] = []
        client = threading.Thread(target=lambda: errors.append(_try(lambda: _chat(pa, "charge me once", "c1"))))
        client.start()
        _wait_for(lambda: "charge me once" in scale_graph.lines(tmp_path, "calls.log"), what="the run to start in A")
        os.kill(a.pid, signal.SIGKILL)  # mid-run: inside the model call, before the effect
        a.wait()
        client.join()
        _wait_for(lambda: [r["status"] for r in _runs(pg_dsn, "scale/c1")] == ["done"], what="B to finish the run")
        time.sleep(3)  # several more recovery rounds in B: nothing may run it again
        assert scale_graph.lines(tmp_path, "effects.log").count("charge me once") == 1
        assert scale_graph.lines(tmp_path, "calls.log").count("charge me once") == 2  # A's (killed) and B's
        run = _runs(pg_dsn, "scale/c1")[0]
        assert run["pid"] == b.pid
        # A third process: recover() finds nothing left over.
        code = (
            "import sys, scale_graph; from slmgraph.config import Config; "
            f"g = scale_graph.make(config=Config(checkpoint={pg_dsn!r})); "
            "print(len(g.pending_runs(include_failed=True)), len(g.recover()))"
        )
        out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["0", "0"]
        assert scale_graph.lines(tmp_path, "effects.log").count("charge me once") == 1
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)


def _try(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the killed server's client sees an error
        return exc
    return None


def test_two_processes_on_one_thread_are_serialised(pg_dsn, tmp_path):
    code = (
        "import sys, scale_graph; from slmgraph.config import Config; "
        f"g = scale_graph.make(config=Config(checkpoint={pg_dsn!r})); "
        "print(g.invoke(sys.argv[1], thread_id='shared').status)"
    )
    env = _env(tmp_path, SCALE_TEST_SLOW="0.8")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"turn {i}"], env=env, stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert outs == [["answered"], ["answered"]]
    events = scale_graph.lines(tmp_path, "events.log")
    assert sorted(events) == sorted(["calls turn 0", "effects turn 0", "calls turn 1", "effects turn 1"])
    # Serialised: each run's model call is followed by its own effect, never the other's call.
    first = events[0].split(" ", 1)[1]
    assert events[:2] == [f"calls {first}", f"effects {first}"]
    assert [r["status"] for r in _runs(pg_dsn, "shared")] == ["done", "done"]


def test_serve_workers_share_one_port(pg_dsn, tmp_path):
    port = _free_port()
    proc = _serve(pg_dsn, port, tmp_path, "--workers", "2")
    try:
        _wait_healthy(port, proc)
        replies = [_chat(port, f"hello {i}", f"w{i}") for i in range(6)]
        assert all(r.status_code == 200 for r in replies)
        pids = {r["pid"] for r in _runs(pg_dsn)}
        assert proc.pid not in pids and len(pids) >= 1
        assert {r["status"] for r in _runs(pg_dsn)} == {"done"}
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# -- prune ----------------------------------------------------------------------


def _age(dsn: str, thread: str, days: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE slmgraph_runs SET updated = %s WHERE thread_id = %s", (time.time() - days * 86400, thread))


def _checkpoints(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT thread_id, count(*) FROM checkpoints GROUP BY thread_id").fetchall()
    return dict(rows)


def test_prune_dry_run_then_removes_exactly_the_old_finished_threads(pg_dsn, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCALE_TEST_DIR", str(tmp_path))
    graph = _graph(pg_dsn)
    for t in ("old-1", "old-2", "new-1"):
        assert graph.invoke(f"work {t}", thread_id=t).status == "answered"
    with pytest.raises(Exception):
        graph.invoke("please fail", thread_id="old-failed")
    for t in ("old-1", "old-2", "old-failed"):
        _age(pg_dsn, t, 40)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a learning-loop table is never touched
        conn.execute("CREATE TABLE learn_snapshots (thread_id TEXT, data TEXT)")
        conn.execute("INSERT INTO learn_snapshots VALUES ('old-1', 'keep me')")
    before = _checkpoints(pg_dsn)
    assert set(before) == {"old-1", "old-2", "new-1", "old-failed"}

    assert main(["prune", "--older-than", "30d", "--dry-run", "--json", "--checkpoint", pg_dsn]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and sorted(dry["thread_ids"]) == ["old-1", "old-2"]
    assert dry["checkpoints"] == before["old-1"] + before["old-2"] and dry["runs"] == 2
    assert _checkpoints(pg_dsn) == before and len(_runs(pg_dsn)) == 4  # nothing removed

    assert main(["prune", "--older-than", "30d", "--checkpoint", pg_dsn]) == 0
    assert "removed 2 finished thread(s)" in capsys.readouterr().out
    after = _checkpoints(pg_dsn)
    assert set(after) == {"new-1", "old-failed"} and after["new-1"] == before["new-1"]
    assert sorted(r["thread_id"] for r in _runs(pg_dsn)) == ["new-1", "old-failed"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM learn_snapshots").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM slmgraph_effects WHERE thread_id LIKE 'old-%'").fetchone()[0] == 0
    assert graph.get_result("new-1").status == "answered"  # the kept thread still reads back


# -- the pool -------------------------------------------------------------------


def test_checkpoint_writes_of_one_process_use_the_pool_concurrently(pg_dsn):
    """LangGraph's saver locks every statement behind one asyncio.Lock; on a pool
    that lock is dropped, so concurrent runs' checkpoint reads overlap."""
    import contextlib

    from slmgraph.storage import pg_pool
    from slmgraph.storage._postgres import pooled_saver, setup_postgres

    async def scenario() -> int:
        async with pg_pool(pg_dsn, max_size=4) as pool:
            saver = pooled_saver(pool)
            await setup_postgres(pool, saver)
            lend, active, peak = pool.connection, 0, 0

            @contextlib.asynccontextmanager
            async def counted(*args, **kwargs):
                nonlocal active, peak
                async with lend(*args, **kwargs) as conn:
                    active += 1
                    peak = max(peak, active)
                    try:
                        await asyncio.sleep(0.01)  # a slow network: each statement takes a while
                        yield conn
                    finally:
                        active -= 1

            pool.connection = counted
            configs = [{"configurable": {"thread_id": f"t{i}", "checkpoint_ns": ""}} for i in range(16)]
            assert await asyncio.gather(*(saver.aget_tuple(c) for c in configs)) == [None] * 16
            return peak

    assert asyncio.run(scenario()) >= 2  # 1 with the saver's own lock


def test_a_pool_larger_than_the_server_allows_is_one_clear_error(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_TEST_DIR", str(tmp_path))
    db = pg_dsn.rsplit("/", 1)[1]
    role = f"lim_{db[-6:]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a limit binds a role that is not a superuser
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'lim-secret' CONNECTION LIMIT 2")
        conn.execute(f"ALTER DATABASE {db} OWNER TO {role}")
    limited = pg_dsn.replace("slm:slm-secret@", f"{role}:lim-secret@")
    monkeypatch.setenv("SLMGRAPH_PG_POOL", "4")
    with pytest.raises(StorageUnavailableError) as info:
        _graph(limited).invoke("hello")
    assert "SLMGRAPH_PG_POOL" in str(info.value) and "lim-secret" not in str(info.value)
    monkeypatch.setenv("SLMGRAPH_PG_POOL", "2")  # within the limit: it runs
    assert _graph(limited).invoke("hello").status == "answered"
    assert scale_graph.lines(tmp_path, "calls.log") == ["hello"]  # the refused one never ran
    monkeypatch.setenv("SLMGRAPH_PG_POOL", "many")
    with pytest.raises(ConfigError) as bad:
        _graph(pg_dsn).invoke("hello")
    assert "SLMGRAPH_PG_POOL" in str(bad.value)
