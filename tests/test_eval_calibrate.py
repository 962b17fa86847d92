"""Calibration: the sweep finds the known optimal thresholds; they are written to the config and used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmgraph import load_config
from slmgraph.eval import OracleModel, Thresholds, evaluate_thresholds, load_dataset, sweep_thresholds, write_thresholds
from slmgraph.eval._cli import build_eval_graph

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def records(n: int = 10, right_from: float = 0.5, forced: int = 0) -> list[dict]:
    """Confidences (i+0.5)/n; the small model is right iff its confidence >= right_from;
    the large model is always right. ``forced`` extra rows cannot stay on the small model."""
    out = []
    for i in range(n):
        conf = (i + 0.5) / n
        out.append({"id": str(i), "forced": False, "route_confidence": 1.0, "confidence": conf,
                    "small_score": float(conf >= right_from), "large_score": 1.0, "small_cost_usd": 0.0})
    for j in range(forced):
        out.append({"id": f"f{j}", "forced": True, "route_confidence": None, "confidence": None,
                    "small_score": 0.0, "large_score": 1.0, "small_cost_usd": 0.0})
    return out


def test_full_quality_needs_exactly_the_unsure_half_escalated():
    # confidences 0.05..0.95; below 0.5 the small model is wrong. The cheapest way to
    # the large model's quality escalates those 5 rows and no more: min_confidence 0.55.
    cal = sweep_thresholds(records(), target=1.0, large_call_cost=0.002)
    assert cal.reached
    assert cal.chosen.thresholds == Thresholds(0.0, 0.55)
    assert cal.chosen.quality == 1.0 and cal.chosen.share == 0.5
    assert cal.chosen.cost_per_1000 == pytest.approx(1.0)  # 0.5 * $0.002 * 1000


def test_a_lower_target_escalates_less():
    cal = sweep_thresholds(records(), target=0.9, large_call_cost=0.002)
    # one wrong answer may stay: escalate only 0.05..0.35, keep 0.45 (wrong) on the small model
    assert cal.chosen.thresholds.min_confidence == pytest.approx(0.45)
    assert cal.chosen.quality == pytest.approx(0.9) and cal.chosen.share == pytest.approx(0.4)


def test_forced_rows_always_escalate_and_count():
    cal = sweep_thresholds(records(forced=2), target=1.0, large_call_cost=0.001)
    assert cal.chosen.thresholds.min_confidence == pytest.approx(0.55)
    assert cal.chosen.share == pytest.approx(7 / 12)
    at_zero = evaluate_thresholds(records(forced=2), Thresholds(0.0, 0.0), large_call_cost=0.001)
    assert at_zero.share == pytest.approx(2 / 12) and at_zero.quality == pytest.approx(7 / 12)


def test_unreachable_target_takes_the_best_quality_and_says_so():
    rows = records()
    for r in rows:
        r["large_score"] = 0.5 if r["id"] in ("0", "1") else 1.0  # the large model errs too
    rows.append({"id": "top", "forced": False, "route_confidence": 1.0, "confidence": 1.0,
                 "small_score": 0.0, "large_score": 1.0, "small_cost_usd": 0.0})  # no threshold escalates conf 1.0
    cal = sweep_thresholds(rows, target=1.0, large_call_cost=0.001)
    assert not cal.reached
    assert cal.chosen.quality == max(
        evaluate_thresholds(rows, Thresholds(0.0, t), large_call_cost=0.001).quality for t in (0.0, 0.25, 0.55, 1.0)
    )


def test_holdout_is_checked_with_the_chosen_thresholds():
    calib, hold = records(10), records(4)  # hold: confidences 0.125, 0.375, 0.625, 0.875
    cal = sweep_thresholds(calib, target=1.0, large_call_cost=0.001, holdout=hold)
    assert cal.holdout is not None and cal.holdout.rows == 4
    assert cal.holdout.share == 0.5 and cal.holdout_reached


def test_write_thresholds_keeps_the_rest_of_the_file(tmp_path):
    cfg = tmp_path / "slm.toml"
    cfg.write_text('# my graph\nroute_threshold = 0.9\nmax_steps = 3\n\n[small]\nprovider = "embedded"\n\n'
                   '[min_confidence]\nold = 0.1\n\n[models.coder]\nprovider = "ollama"\nmodel = "x"\n')
    write_thresholds(cfg, Thresholds(0.25, 0.6))
    write_thresholds(cfg, Thresholds(0.3, 0.65))  # twice: replaced, not duplicated
    text = cfg.read_text()
    assert text.count("route_threshold") == 1 and text.count("[min_confidence]") == 1 and "old = 0.1" not in text
    c = load_config(cfg, env={})
    assert c.route_threshold == 0.3 and c.min_confidence == {"*": 0.65}
    assert c.max_steps == 3 and c.small.provider == "embedded" and c.models["coder"].model == "x"
    fresh = write_thresholds(tmp_path / "new.toml", Thresholds(0.0, 0.5))
    assert load_config(fresh, env={}).min_confidence == {"*": 0.5}


def test_graphs_built_from_config_use_the_written_thresholds(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    rows = load_dataset(_dataset(tmp_path, 10))
    base = load_config(overrides={"small": {"provider": "embedded"}}, env={})
    strict = load_config(overrides={"small": {"provider": "embedded"}, "min_confidence": {"label": 0.9}}, env={})
    loose = build_eval_graph("eval_graphs:synthetic_graph", base, OracleModel())
    tight = build_eval_graph("eval_graphs:synthetic_graph", strict, OracleModel({r.input: r.expected for r in rows}))
    assert loose.spec.skills["label"].acceptance.min_confidence == 0.5  # the skill's own
    assert tight.spec.skills["label"].acceptance.min_confidence == 0.9
    r = tight.invoke(rows[8].input)  # confidence 0.85 < 0.9
    assert r.status == "escalated" and r.escalation_reason == "low_confidence"
    assert loose.invoke(rows[8].input).status == "answered"


def _dataset(tmp_path: Path, n: int, right_from: float = 0.5) -> Path:
    sys.path.insert(0, str(TESTS))
    from eval_graphs import synthetic_rows

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(n, right_from=right_from)))
    return path


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLMGRAPH_", "OPENAI_", "OLLAMA_"))}
    e.update({"OLLAMA_HOST": "http://127.0.0.1:9", "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "slmgraph.cli", *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=300)


def test_calibrate_cli_reaches_the_target_and_writes_the_config(tmp_path):
    data = _dataset(tmp_path, 40)
    cfg = tmp_path / "slm.toml"
    cfg.write_text('[small]\nprovider = "embedded"\n')
    p = _cli("calibrate", "eval_graphs:synthetic_graph", str(data), "--config", str(cfg), "--target", "1.0",
             "--holdout", "0.25", "--out", "cal", "--json", "--no-progress", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    cal = report["calibration"]
    assert cal["reached"] and cal["holdout_reached"]
    chosen = cal["chosen"]["thresholds"]["min_confidence"]
    # the small model is right from confidence 0.5 up: the threshold sits between
    # the highest wrong confidence (0.4875) and the lowest right one (0.5125)
    assert 0.4875 < chosen <= 0.5125
    assert report["large_model"]["kind"] == "oracle"
    assert load_config(cfg, env={}).min_confidence == {"*": chosen}
    assert (tmp_path / "cal" / "cost_quality.png").read_bytes()[:4] == b"\x89PNG"
    # the written thresholds make `slmgraph eval` escalate exactly the unsure half
    e = _cli("eval", "eval_graphs:synthetic_graph", str(data), "--config", str(cfg), "--out", "ev", "--json", "--no-progress", cwd=tmp_path)
    assert e.returncode == 0, e.stderr
    ev = json.loads(e.stdout)
    assert ev["quality"] == 1.0 and ev["escalation_rate"] == 0.5
