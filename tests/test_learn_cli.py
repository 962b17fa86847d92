"""``slmgraph data`` and ``slmgraph learn`` end to end on a store the scripted help desk filled."""

from __future__ import annotations

import csv
import json

import pytest

from slmgraph.cli import main
from slmgraph.graphs._blueprints import register_graph

from learn_helpers import helpdesk
from test_learn_loop import METAL, PIN, answers

UNSEEN = "I want to change my PIN now"


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    graph, store, oracle = helpdesk(tmp_path, {**answers(), UNSEEN: "change_pin"}, refresh_s=0.0)
    register_graph("learn_cli_test", lambda models, *, config=None, prices=None: graph)
    cfg = tmp_path / "slm.toml"
    cfg.write_text(f'checkpoint = "{tmp_path / "ck.sqlite"}"\n[learning]\nstore = "{store.path}"\nholdout = 0.3\nadopt_after = 2\n')
    monkeypatch.setattr("slmgraph.models._embed.default_embedder", lambda: __import__("learn_helpers").EMBEDDER)
    return graph, store, str(cfg), tmp_path


async def _fill(graph, store):
    for text in [*METAL, *PIN]:
        await graph.ainvoke(text)
    await store.close()


def test_data_and_learn_commands(setup, capsys):
    import asyncio

    graph, store, cfg, tmp = setup
    asyncio.run(_fill(graph, store))
    assert main(["data", "list", "--config", cfg]) == 0
    assert "records:   7 (escalation 7)" in capsys.readouterr().out
    assert main(["learn", "run", "--graph", "learn_cli_test", "--config", cfg, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "triage: snapshot" in out and "promoted" in out and "not promoted" not in out
    assert main(["learn", "status", "--config", cfg, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    current = status["targets"]["triage"]["current"]
    assert current.startswith("triage@memory-")
    assert asyncio.run(graph.ainvoke(UNSEEN)).status == "answered"  # served without a restart
    assert main(["data", "list", "--config", cfg, "--json"]) == 0
    (snap,) = json.loads(capsys.readouterr().out)["snapshots"]
    assert main(["data", "show", snap["id"][:6], "--config", cfg]) == 0
    assert "label" in capsys.readouterr().out
    out_jsonl, out_csv = tmp / "train.jsonl", tmp / "all.csv"
    assert main(["data", "export", snap["id"], "--config", cfg, "--out", str(out_jsonl), "--graph", "learn_cli_test"]) == 0
    lines = [json.loads(x) for x in out_jsonl.read_text().splitlines()]
    assert lines and [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    assert lines[0]["messages"][2]["content"] in ("card_types", "change_pin")
    assert main(["data", "export", snap["id"], "--config", cfg, "--format", "csv", "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["split"] for r in rows} == {"train", "holdout"} and len(rows) == snap["train"] + snap["holdout"]
    fix = tmp / "fix.jsonl"
    fix.write_text(json.dumps({"request": "Do you have metal cards?", "label": "card_material"}) + "\n")
    assert main(["data", "import", str(fix), "--skill", "triage", "--config", cfg]) == 0
    assert "imported 1" in capsys.readouterr().out
    assert main(["learn", "rollback", "triage", "--reason", "cli test", "--config", cfg]) == 0
    assert "(the skill as built)" in capsys.readouterr().out
    assert asyncio.run(graph.ainvoke(UNSEEN)).status == "escalated"
    assert main(["learn", "promote", current, "--config", cfg]) == 0
    assert main(["learn", "report", "--config", cfg, "--out", str(tmp / "rep")]) == 0
    assert (tmp / "rep" / "learning.png").stat().st_size > 1000
    assert "promote" in (tmp / "rep" / "learning.md").read_text()


def test_bad_input_is_a_clear_error_not_a_traceback(setup, capsys):
    _, _, cfg, tmp = setup
    assert main(["data", "show", "nosuch", "--config", cfg]) == 2
    assert "UnknownVersionError" in capsys.readouterr().err
    assert main(["learn", "promote", "triage@memory-0000", "--config", cfg]) == 2
    bad = tmp / "bad.toml"
    bad.write_text("[learning]\naudit_sample = 2.0\n")
    assert main(["learn", "status", "--config", str(bad)]) == 2
    assert "learning.audit_sample" in capsys.readouterr().err


def test_shadow_on_live_traffic_then_judge_from_the_cli(setup, capsys):
    import asyncio

    graph, store, cfg, tmp = setup
    asyncio.run(_fill(graph, store))
    assert main(["learn", "run", "--graph", "learn_cli_test", "--live", "1.0", "--no-progress", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "in shadow on 100% of live traffic" in out and "not promoted" in out
    version = out.split("candidate ")[1].split()[0]
    assert main(["learn", "shadow", version, "--sample", "1.5", "--config", cfg]) == 2
    assert "--sample" in capsys.readouterr().err
    live = ["I would like to change my card PIN", "can I change my PIN please", "how to change the PIN of my card"]

    async def traffic():
        graph.spec.models["large"].answers.update({t: "change_pin" for t in live})
        for t in live:
            assert (await graph.ainvoke(t)).status == "escalated"  # the served version answers
        await graph.shadow.drain()
        await store.close()

    asyncio.run(traffic())
    assert main(["learn", "judge", version, "--graph", "learn_cli_test", "--min-labelled", "3", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "3 live shadow results (3 with a teacher answer)" in out and "promoted: escalates less" in out
    assert main(["learn", "status", "--json", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["targets"]["triage"]["current"] == version
