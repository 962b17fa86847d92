"""The CLI end to end on the embedded default: no Ollama, no large model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slmgraph import NO_LARGE_MODEL

pytestmark = pytest.mark.embedded


def slmgraph(*args: str, tmp_path, stdin: str | None = None, bare: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI with no slmgraph, OpenAI or Ollama variables set. Unless ``bare``,
    point Ollama at a port where nothing listens and keep checkpoints in ``tmp_path``;
    ``bare`` runs it exactly as a new user would, from ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLMGRAPH_", "OPENAI_", "OLLAMA_"))}
    if not bare:
        env["OLLAMA_HOST"] = "http://127.0.0.1:9"  # nothing listens there: forces the embedded default
        env["SLMGRAPH_CHECKPOINT"] = str(tmp_path / "ckpt.sqlite")
    return subprocess.run(
        [sys.executable, "-m", "slmgraph.cli", *args],
        capture_output=True, text=True, env=env, input=stdin, timeout=600, cwd=tmp_path,
    )


def test_run_json_on_the_embedded_default(tmp_path):
    p = slmgraph("run", "--json", "My new card has not arrived yet, where is it?", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["status"] in ("answered", "escalation_needed")
    assert r["route"] in ("triage", "sentiment", None)
    assert r["ledger"] and {e["provider"] for e in r["ledger"]} == {"llamacpp"}
    assert all(e["prompt_tokens"] > 0 and e["completion_tokens"] > 0 for e in r["ledger"])
    assert r["totals"]["calls"] == len(r["ledger"]) and r["totals"]["large_calls"] == 0
    if r["status"] == "answered":
        assert r["output_json"] is not None and json.loads(r["answer"]) == r["output_json"]
    else:
        assert NO_LARGE_MODEL in r["message"] and r["answer"] is None and r["escalation_reason"]
    # the run is in the checkpoint, and can be read back by thread id
    again = slmgraph("run", "--json", "--resume", r["thread_id"], tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == r["status"]


def test_run_human_output_from_stdin(tmp_path):
    p = slmgraph("run", tmp_path=tmp_path, stdin="Please rate this review: the staff were lovely.")
    assert p.returncode == 0, p.stderr
    for label in ("route:", "status:", "answer:", "ledger:", "thread:"):
        assert label in p.stdout
    assert "llamacpp:" in p.stdout


def test_run_errors_are_typed_and_named(tmp_path):
    empty = slmgraph("run", "   ", tmp_path=tmp_path)
    assert empty.returncode == 2 and "EmptyRequestError" in empty.stderr and "empty" in empty.stderr
    huge = slmgraph("run", "word " * 5000, tmp_path=tmp_path)
    assert huge.returncode == 2 and "RequestTooLargeError" in huge.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[small]\ntimeout = -5\n")
    cfg = slmgraph("run", "--config", str(bad), "hi", tmp_path=tmp_path)
    assert cfg.returncode == 2 and "small.timeout" in cfg.stderr
    unknown = slmgraph("run", "--graph", "nope", "hi", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "unknown graph 'nope'" in unknown.stderr
    missing = slmgraph("run", "--resume", "no-such-thread", tmp_path=tmp_path)
    assert missing.returncode == 2 and "no-such-thread" in missing.stderr


def test_doctor_and_models(tmp_path):
    d = slmgraph("doctor", tmp_path=tmp_path)
    assert d.returncode == 0, d.stdout + d.stderr
    assert "[--] ollama" in d.stdout and "http://127.0.0.1:9" in d.stdout and "ollama serve" in d.stdout
    assert "[ok] embedded" in d.stdout
    assert "[--] large model" in d.stdout and "not configured" in d.stdout
    m = slmgraph("models", "--json", tmp_path=tmp_path)
    found = json.loads(m.stdout)
    assert found["ollama"] is None
    assert found["embedded"][0].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_run_with_no_configuration_at_all(tmp_path):
    # The README's promise: nothing configured, nothing running -> the embedded engine.
    # (Assumes no Ollama server on the default port, true on our build machines.)
    p = slmgraph("run", "--json", "I love this bank, the app is great. Review: 5/5", tmp_path=tmp_path, bare=True)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert {e["provider"] for e in r["ledger"]} == {"llamacpp"}
    assert (tmp_path / ".slmgraph" / "checkpoints.sqlite").exists()  # the default checkpoint file
    m = slmgraph("models", tmp_path=tmp_path, bare=True)
    assert m.returncode == 0 and "ollama: not reachable" in m.stdout
