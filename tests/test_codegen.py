"""The generate_code skill: parse check, tests in a child process, repair, escalation."""

from __future__ import annotations

import json
import os

import pytest

from slmgraph import Accepted, EscalationReason, Rejected, RunContext, build_graph, run_skill
from slmgraph.skills._codegen import CodeResult, CodeTask, generate_code_skill, run_tests
from slmgraph.testing import ScriptedModel

ADD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
TASK = json.dumps({"task": "Add two numbers.", "function_name": "add",
                   "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"})


def ctx(model) -> RunContext:
    return RunContext({"small": model})


async def test_code_that_parses_is_accepted_without_tests():
    small = ScriptedModel([{"code": ADD}])
    out = await run_skill(generate_code_skill(), "Write a function add(a, b) that adds two numbers.", ctx(small))
    assert isinstance(out, Accepted) and out.output == CodeResult(code=ADD.rstrip("\n"), tests_run=0)
    assert small.calls[0].messages[-1].content.startswith("Task: Write a function add(a, b)")


async def test_code_that_does_not_parse_is_repaired_in_the_conversation():
    small = ScriptedModel([{"code": "def add(a, b)\n    return a + b"}, {"code": ADD}])
    out = await run_skill(generate_code_skill(), TASK, ctx(small))
    assert isinstance(out, Accepted) and out.output.tests_run == 2
    repair = small.calls[1].messages
    assert [m.role for m in repair[-2:]] == ["assistant", "user"]
    assert "does not parse: line 1" in repair[-1].content


async def test_code_fences_are_stripped_and_the_named_function_is_required():
    fenced = f"```python\n{ADD}```"
    small = ScriptedModel([{"code": "def plus(a, b):\n    return a + b"}, {"code": fenced}])
    out = await run_skill(generate_code_skill(), {"task": "Add.", "function_name": "add"}, ctx(small))
    assert isinstance(out, Accepted) and out.output.code == ADD.rstrip("\n")
    assert "does not define 'add'" in small.calls[1].messages[-1].content


async def test_failing_tests_are_repaired_with_the_failure_attached():
    small = ScriptedModel([{"code": WRONG}, {"code": ADD}])
    out = await run_skill(generate_code_skill(), TASK, ctx(small))
    assert isinstance(out, Accepted) and out.output.tests_run == 2
    retry = small.calls[1].messages[-1].content
    assert "assert add(2, 3) == 5 -> got -1, expected 5" in retry and WRONG.strip() in retry


async def test_code_that_keeps_failing_escalates_with_the_failure_attached():
    small = ScriptedModel([{"code": WRONG}], repeat_last=True)
    out = await run_skill(generate_code_skill(max_repairs=2), TASK, ctx(small))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK
    assert "after 3 attempt(s)" in out.detail and "got -1, expected 5" in out.detail
    assert out.draft["code"] == WRONG.rstrip("\n") and "got -1, expected 5" in out.draft["failure"]
    assert len(small.calls) == 3


async def test_the_graph_keeps_failing_code_and_its_failure_in_the_draft():
    small = ScriptedModel([{"code": WRONG}], repeat_last=True)
    g = build_graph([generate_code_skill(max_repairs=0)], models={"small": small}, checkpoint=None)
    r = await g.ainvoke(TASK)
    assert (r.status, r.escalation_reason) == ("escalation_needed", "failed_check")
    assert "got -1, expected 5" in r.draft["failure"] and r.answer is None


async def test_the_graph_answers_with_the_code_text():
    g = build_graph([generate_code_skill()], models={"small": ScriptedModel([{"code": ADD}])}, checkpoint=None)
    r = await g.ainvoke(TASK)
    assert (r.status, r.answer) == ("answered", ADD.rstrip("\n"))
    assert r.output_json == {"code": ADD.rstrip("\n"), "tests_run": 2}


async def test_unparseable_code_after_every_repair_escalates_as_invalid():
    small = ScriptedModel([{"code": "def add(:"}], repeat_last=True)
    out = await run_skill(generate_code_skill(max_repairs=1), TASK, ctx(small))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK
    assert "does not parse" in out.detail and out.draft["code"] == "def add(:"
    assert len(small.calls) == 2


async def test_tests_that_check_nothing_are_bad_input_and_no_model_is_called():
    small = ScriptedModel([])
    for tests in ("x = 1", "assert ("):
        out = await run_skill(generate_code_skill(), {"task": "t", "tests": tests}, ctx(small))
        assert isinstance(out, Rejected) and out.reason == EscalationReason.BAD_INPUT
    assert small.calls == []


def test_a_task_is_json_or_plain_text():
    assert CodeTask.model_validate_json("reverse a string") == CodeTask(task="reverse a string")
    assert CodeTask.model_validate_json(TASK).function_name == "add"
    with pytest.raises(ValueError):
        CodeTask.model_validate_json('{"function_name": "add"}')  # JSON without a task is an error
    with pytest.raises(ValueError):
        CodeTask(task="t", function_name="os.system")


def test_an_infinite_loop_is_killed_at_the_timeout():
    code = "import os\nprint(os.getpid(), flush=True)\nwhile True:\n    pass\n"
    report = run_tests(code, "assert True", timeout=1.0)
    assert not report.ok and "timed out after 1 s" in report.error
    pid = int(report.output.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone, not left running


async def test_a_timeout_escalates_with_the_failure():
    loop = "def add(a, b):\n    while True:\n        pass\n"
    small = ScriptedModel([{"code": loop}], repeat_last=True)
    out = await run_skill(generate_code_skill(max_repairs=0, timeout=1.0), TASK, ctx(small))
    assert isinstance(out, Rejected) and "timed out" in out.detail


def test_pytest_style_tests_and_errors_are_reported():
    tests = "import math\n\ndef test_ok():\n    assert add(1, 1) == 2\n\ndef test_bad():\n    assert add(1, 1) == 3, 'off'\n"
    report = run_tests(ADD, tests)
    assert report.passed == 1 and len(report.failures) == 1
    assert report.failures[0].startswith("test_bad -> AssertionError: off")
    broken = run_tests("raise ImportError('nope')", "assert add(1, 1) == 2")
    assert broken.error == "the code raised while loading: ImportError: nope"


def test_the_child_does_not_see_the_parent_environment(monkeypatch):
    monkeypatch.setenv("SLMGRAPH_TEST_SECRET", "hunter2")
    code = "import os, sys\ndef secret():\n    return os.environ.get('SLMGRAPH_TEST_SECRET')\n"
    assert run_tests(code, "assert secret() is None").ok
    assert run_tests("import os\ndef cwd():\n    return os.getcwd()\n", f"assert cwd() != {os.getcwd()!r}").ok


# -- the real embedded model ----------------------------------------------------------


@pytest.mark.embedded
async def test_embedded_code_is_tested_or_escalates_with_the_failure():
    from slmgraph import LlamaCppModel

    smol = LlamaCppModel()
    task = {"task": "Return the sum of a and b.", "function_name": "add", "tests": "assert add(2, 3) == 5"}
    out = await run_skill(generate_code_skill(max_repairs=1), task, RunContext({"small": smol}))
    if isinstance(out, Accepted):
        assert out.output.tests_run == 1
        assert run_tests(out.output.code, task["tests"]).ok  # acceptance was enforced
    else:
        assert out.reason in (EscalationReason.FAILED_CHECK, EscalationReason.INVALID_OUTPUT)
        assert out.draft["failure"]
