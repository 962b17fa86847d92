"""Durable runs: a real crash (SIGKILL) inside a node, then resume from SQLite.

The crashing run happens in a subprocess (tests/crash_run.py) that kills itself
inside a node; this process then rebuilds the same graph on the same SQLite file
and resumes. tests/crash_run.py logs every node execution to a file, so we can
count which nodes ran before and after the crash.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slmgraph import ModelUnavailableError, RulesRouter, UserError, build_graph
from slmgraph.testing import ScriptedModel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load_helper():
    spec = importlib.util.spec_from_file_location("crash_run", HERE / "crash_run.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


crash_run = _load_helper()


def crash(workdir: Path, mode: str, thread_id: str) -> subprocess.CompletedProcess:
    """Run the crashing graph in a child process; it should die by SIGKILL."""
    env = dict(os.environ)
    # Make `import slmgraph` resolve to this checkout whatever the script's directory.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, str(HERE / "crash_run.py"), str(workdir), mode, thread_id],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only, not a performance bound
    )


def test_sigkill_in_escalation_resumes_without_rerunning_router_or_specialist(tmp_path: Path) -> None:
    thread = "crash-in-escalation"
    proc = crash(tmp_path, "escalation", thread)

    # The child really died by SIGKILL, inside the escalation node's model call.
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert (tmp_path / "armed-escalation").exists()
    assert crash_run.calls(tmp_path) == ["router", "specialist:strict", "escalation"]

    graph = crash_run.build(tmp_path, "escalation")

    # What the crashed run left behind: router and specialist are checkpointed.
    before = graph.get_result(thread)
    assert before is not None, "nothing was checkpointed before the crash"
    assert before.status == "running"
    assert before.route == "strict"
    assert before.escalation_reason == "failed_check"

    result = graph.resume(thread)

    assert result.thread_id == thread
    assert result.status == "escalated"
    assert result.answer == crash_run.ESCALATED_ANSWER
    assert result.route == "strict"
    assert result.escalation_reason == "failed_check"
    assert result.draft == {"label": "strict-draft"}

    runs = crash_run.calls(tmp_path)
    assert runs.count("router") == 1, runs  # not re-run on resume
    assert runs.count("specialist:strict") == 1, runs  # not re-run on resume
    assert runs.count("escalation") == 2, runs  # the crashed call, then the resumed one
    assert "specialist:lenient" not in runs

    # The ledger has the specialist's call and the escalation call that completed;
    # the call killed mid-flight never finished, so it is not in it.
    assert [(e.node, e.tier) for e in result.ledger] == [("specialist", "small"), ("escalation", "large")]
    assert result.totals.calls == 2
    assert result.totals.large_calls == 1

    # The checkpointed final result is the one resume returned.
    again = graph.get_result(thread)
    assert again is not None
    assert again.model_dump() == result.model_dump()

    # A fresh graph object on the same file sees the same finished run.
    assert crash_run.build(tmp_path, "escalation").get_result(thread) == result

    with pytest.raises(UserError, match="no-such-thread"):
        graph.resume("no-such-thread")
    assert graph.get_result("no-such-thread") is None


def test_sigkill_in_specialist_resumes_only_the_specialist(tmp_path: Path) -> None:
    thread = "crash-in-specialist"
    proc = crash(tmp_path, "specialist", thread)

    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert crash_run.calls(tmp_path) == ["router", "specialist:lenient"]

    graph = crash_run.build(tmp_path, "specialist")
    before = graph.get_result(thread)
    assert before is not None, "nothing was checkpointed before the crash"
    assert before.status == "running"
    assert before.route == "lenient"

    result = graph.resume(thread)

    assert result.status == "answered"
    assert result.route == "lenient"
    assert result.output_json == {"label": "lenient-draft"}
    assert result.answer == '{"label":"lenient-draft"}'

    runs = crash_run.calls(tmp_path)
    assert runs.count("router") == 1, runs
    assert runs.count("specialist:lenient") == 2, runs  # crashed once, re-run once
    assert "escalation" not in runs
    assert [e.node for e in result.ledger] == ["specialist"]

    assert graph.get_result(thread) == result


async def test_checkpoint_survives_a_typed_model_error(tmp_path: Path) -> None:
    thread = "typed-error"
    down = ModelUnavailableError("cannot reach the small model at localhost:1", model="small-sm", provider="test")
    small = ScriptedModel([down], name="small-sm")
    large = ScriptedModel([], name="large-sm")

    def build():
        return build_graph(
            [crash_run.STRICT, crash_run.LENIENT],
            models={"small": small, "large": large},
            router=crash_run.CountingRouter(tmp_path),
            checkpoint=tmp_path / "typed.sqlite",
        )

    graph = build()
    with pytest.raises(ModelUnavailableError, match="localhost:1"):
        await graph.ainvoke(crash_run.LENIENT_REQUEST, thread_id=thread)
    assert len(small.calls) == 1

    # The router's decision is checkpointed even though the specialist raised.
    partial = await graph.aget_result(thread)
    assert partial is not None
    assert partial.status == "running"
    assert partial.route == "lenient"
    assert partial.route_confidence == 1.0
    assert partial.answer is None

    small.push({"label": "recovered"})
    result = await build().aresume(thread)

    assert result.status == "answered"
    assert result.output_json == {"label": "recovered"}
    assert len(small.calls) == 2  # the failed call, then the retried one
    assert large.calls == []
    assert crash_run.calls(tmp_path).count("router") == 1  # router not re-run
    assert await graph.aget_result(thread) == result


async def test_resume_unknown_thread_and_no_checkpointer_raise_user_error(tmp_path: Path) -> None:
    graph = crash_run.build(tmp_path)
    with pytest.raises(UserError, match="nothing to resume"):
        await graph.aresume("never-started")
    assert crash_run.calls(tmp_path) == []  # nothing ran

    plain = build_graph(
        [crash_run.LENIENT],
        models={"small": ScriptedModel([])},
        router=RulesRouter([], default="lenient"),
        checkpoint=None,
    )
    with pytest.raises(UserError, match="no checkpointer"):
        await plain.aresume("whatever")
    assert await plain.aget_result("whatever") is None
