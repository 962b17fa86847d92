"""An interrupted eval resumes: no row lost, none counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from slmgraph import load_config
from slmgraph.eval import OracleModel, ResultsFile, load_dataset, load_scorer, run_eval
from slmgraph.eval._cli import build_eval_graph

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from eval_graphs import synthetic_rows  # noqa: E402


def _write(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(n)))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLMGRAPH_", "OPENAI_", "OLLAMA_"))}
    e.update(OLLAMA_HOST="http://127.0.0.1:9", PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), **extra)
    return e


def test_a_killed_eval_resumes_without_losing_or_repeating_rows(tmp_path):
    n = 16
    data = _write(tmp_path, n)
    results = tmp_path / "out" / "results.jsonl"
    first_log, second_log = tmp_path / "calls1.log", tmp_path / "calls2.log"
    args = [sys.executable, "-m", "slmgraph.cli", "eval", "eval_graphs:synthetic_graph", str(data),
            "--out", "out", "--concurrency", "2", "--no-progress", "--json"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(EVAL_TEST_SLEEP="0.4", EVAL_TEST_LOG=str(first_log)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_lines(results)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {r["id"] for r in _lines(results)}
    assert 4 <= len(done_before) < n, "the kill must land mid-run"

    p = subprocess.run(args, cwd=tmp_path, env=_env(EVAL_TEST_LOG=str(second_log)), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = _lines(results)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == n  # every row exactly once
    rerun = set(second_log.read_text().split())
    assert not rerun & done_before  # finished rows were not run again
    assert rerun | done_before == {f"r{i}" for i in range(n)}
    report = json.loads(p.stdout)
    assert report["rows"] == n
    assert report["escalation_rate"] == 0.5 and report["quality"] == 1.0  # the whole dataset, counted once


def test_a_cancelled_eval_task_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("EVAL_TEST_SLEEP", "0.05")
    rows = load_dataset(_write(tmp_path, 20))
    config = load_config(overrides={"small": {"provider": "embedded"}}, env={})
    large = OracleModel()
    graph = build_eval_graph("eval_graphs:synthetic_graph", config, large)
    results = tmp_path / "results.jsonl"
    scorer = load_scorer("label")

    async def interrupted() -> int:
        task = asyncio.create_task(run_eval(graph, rows, results, scorer=scorer, large=large, concurrency=3, progress=False))
        while len(ResultsFile(results).load()) < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return len(ResultsFile(results).load())

    done = asyncio.run(interrupted())
    assert 5 <= done < 20
    monkeypatch.setenv("EVAL_TEST_SLEEP", "0")
    records = asyncio.run(run_eval(graph, rows, results, scorer=scorer, large=large, progress=False))
    assert [r["id"] for r in records] == [r.id for r in rows]
    lines = _lines(results)
    assert len(lines) == 20 and len({r["id"] for r in lines}) == 20
    assert sum(r["large_calls"] for r in records) == 10 <= large.calls  # in-flight rows may have called it too


def test_a_line_cut_off_by_a_kill_is_dropped_and_the_row_rerun(tmp_path):
    rows = load_dataset(_write(tmp_path, 4))
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"id": "r0", "status": "answered"}) + "\n" + '{"id": "r1", "stat')
    assert set(ResultsFile(results).load()) == {"r0"}
    assert results.read_text().endswith("}\n")  # the torn line is gone
    config = load_config(overrides={"small": {"provider": "embedded"}}, env={})
    graph = build_eval_graph("eval_graphs:synthetic_graph", config, OracleModel())
    asyncio.run(run_eval(graph, rows, results, scorer=load_scorer(), large=OracleModel(), progress=False))
    assert sorted(r["id"] for r in _lines(results)) == ["r0", "r1", "r2", "r3"]
