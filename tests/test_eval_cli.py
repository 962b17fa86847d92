"""`slmgraph eval` end to end on a scripted graph (fast) and on the embedded default."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from eval_graphs import synthetic_rows  # noqa: E402


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLMGRAPH_", "OPENAI_", "OLLAMA_"))}
    env.update(OLLAMA_HOST="http://127.0.0.1:9", PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    return subprocess.run([sys.executable, "-m", "slmgraph.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _data(tmp_path: Path) -> list[dict]:
    rows = synthetic_rows(8)  # confidences 0.0625 .. 0.9375; right from 0.5; min_confidence 0.5
    rows.append({"id": "bad", "input": "case bad conf=0.9 small=NONE", "expected": "A"})  # invalid output
    return rows


def test_eval_reports_quality_cost_latency_and_escalation_sources(tmp_path):
    rows = _data(tmp_path)
    with open(tmp_path / "data.csv", "w", newline="") as f:  # CSV with custom column names
        w = csv.DictWriter(f, fieldnames=["key", "question", "gold"])
        w.writeheader()
        w.writerows({"key": r["id"], "question": r["input"], "gold": r["expected"]} for r in rows)
    p = _cli("eval", "eval_graphs:synthetic_graph", "data.csv", "--input-col", "question", "--expected-col", "gold",
             "--id-col", "key", "--large-cost-per-call", "0.01", "--out", "out", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "eval [" in p.stderr and "9/9" in p.stderr  # the progress bar
    r = json.loads(p.stdout)
    assert r["rows"] == 9 and r["errors"] == 0
    assert r["large_model"] == {"kind": "oracle", "name": "oracle", "cost_per_call": 0.01}
    # 4 unsure rows escalate for low confidence, the invalid one for its output
    assert r["escalation_rate"] == pytest.approx(5 / 9)
    assert r["escalations"]["by_source"] == {"low confidence": 4, "failed check": 1}
    assert r["quality"] == 1.0  # the oracle fixes every escalation; the confident 4 are right
    assert r["calls"]["large"] == 5
    assert r["cost"]["large_usd"] == pytest.approx(0.05) and r["cost"]["per_1000_usd"] == pytest.approx(50 / 9)
    assert r["cost"]["all_large_usd"] == pytest.approx(0.09)
    assert r["latency"]["p50_s"] > 0 and r["latency"]["p95_s"] >= r["latency"]["p50_s"]
    rt = r["routing"]
    assert rt["small_only_quality"] == pytest.approx(4 / 9) and rt["large_only_quality"] == 1.0
    assert rt["router"]["apgr"] > rt["zero"]["apgr"] == pytest.approx(0.5)
    assert rt["operating_point"]["pgr"] == pytest.approx(1.0)
    assert r["per_skill"]["label"]["rows"] == 9
    out = tmp_path / "out"
    assert (out / "cost_quality.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "oracle" in md and "APGR" in md and "low confidence" in md
    assert json.loads((out / "report.json").read_text())["rows"] == 9
    assert len((out / "results.jsonl").read_text().splitlines()) == 9


def test_eval_with_recorded_answers_says_so_and_scores_them(tmp_path):
    rows = synthetic_rows(4)  # confidences 0.125, 0.375 (escalate), 0.625, 0.875
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recorded = [{"id": "r0", "output": "A"}, {"input": rows[1]["input"], "output": "B"}, {"id": "r2", "output": "A"}]
    (tmp_path / "large.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    p = _cli("eval", "eval_graphs:synthetic_graph", "data.jsonl", "--large-answers", "recorded:large.jsonl",
             "--out", "out", "--json", "--no-progress", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["large_model"]["kind"] == "recorded"
    assert r["quality"] == pytest.approx(3 / 4)  # r1's recorded answer is wrong
    # r3 has no recorded answer: the routing curve cannot be drawn, and the report says why
    assert r["routing"]["available"] is False and "not known" in r["routing"]["why"]
    assert "recorded" in (tmp_path / "out" / "report.md").read_text()


def test_eval_errors_name_the_problem(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"question": "x", "expected": "y"}\n')
    p = _cli("eval", "quickstart", "data.jsonl", cwd=tmp_path)
    assert p.returncode == 2 and "no column 'input'" in p.stderr
    q = _cli("eval", "no_such_graph", "data.jsonl", "--input-col", "question", cwd=tmp_path)
    assert q.returncode == 2 and "unknown graph 'no_such_graph'" in q.stderr


@pytest.mark.embedded
def test_eval_on_the_embedded_default(tmp_path):
    rows = [
        {"input": "My new card still has not arrived, where is it?", "expected": "card_arrival"},
        {"input": "I want to close my account please.", "expected": "close_account"},
        {"input": "What exchange rate do you use for dollars?", "expected": "exchange_rate"},
    ]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _cli("eval", "helpdesk", "tiny.jsonl", "--concurrency", "1", "--out", "out", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["rows"] == 3 and r["errors"] == 0
    assert r["large_model"]["kind"] == "oracle"
    assert r["calls"]["small"] >= 1  # the embedded SmolLM2 ran
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {x["status"] for x in results} <= {"answered", "escalated"}
    for x in results:  # an escalation goes to the oracle, which is always right
        assert x["score"] == (1.0 if x["status"] == "escalated" else float(x["prediction"] == x["expected"]))
    assert r["escalation_rate"] == pytest.approx(sum(x["status"] == "escalated" for x in results) / 3)
    assert (tmp_path / "out" / "report.md").exists()
