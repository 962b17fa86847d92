"""The ``generate_code`` skill: small Python functions, checked by parsing and by the
caller's tests run in a separate Python process.

The generated code is never executed in this process. Tests run in a child
interpreter (``python -I`` in a fresh temporary directory, a minimal environment
without the parent's variables, a wall-clock timeout after which the whole process
group is killed, and CPU and memory limits where the platform has them). That keeps
a hung or crashing solution away from the graph; it is not a security sandbox
(the child can still reach the file system and the network), so run untrusted
requests in a container if that matters.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .._context import RunContext
from .._errors import ConfigError
from ._run import run_skill
from ._skill import AcceptancePolicy, Accepted, EscalationReason, Example, Rejected, Skill

__all__ = ["CodeTask", "GeneratedCode", "CodeResult", "TestReport", "generate_code_skill", "run_tests"]


class CodeTask(BaseModel):
    """What to write. As text: JSON with these fields, or plain text (the task).

    Attributes:
        task: what the code must do.
        function_name: the function the code must define, when the tests call one.
        tests: Python ``assert`` lines, or ``def test_...():`` functions, run
            against the code.
    """

    task: str = Field(min_length=1)
    function_name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    tests: str | None = None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> CodeTask:  # type: ignore[override]
        """Parse JSON; text that is not a JSON object is taken as the task itself."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError:
            text = json_data.decode() if isinstance(json_data, (bytes, bytearray)) else json_data
            if text.lstrip().startswith("{"):
                raise
            return cls(task=text)


class GeneratedCode(BaseModel):
    """What the model writes."""

    code: str = Field(description="complete Python source code, with any imports it needs")


class CodeResult(BaseModel):
    """Accepted code: it parses and passed every test given."""

    code: str
    tests_run: int = Field(description="assertions and test functions that passed (0: no tests were given)")


@dataclass(frozen=True, slots=True)
class TestReport:
    """The outcome of running tests in a child process.

    Attributes:
        passed: checks that passed.
        failures: one line per failed check (the statement and what went wrong).
        error: the code could not be loaded, or the run timed out or crashed.
        output: the child's captured output (truncated).
    """

    __test__ = False  # not a pytest class

    passed: int
    failures: tuple[str, ...]
    error: str | None
    output: str

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures and self.passed > 0

    def describe(self) -> str:
        lines = [self.error] if self.error else []
        lines += list(self.failures[:5])
        if len(self.failures) > 5:
            lines.append(f"... and {len(self.failures) - 5} more failures")
        return "\n".join(lines)


_MARK = "@@slmgraph-test-report@@"

# Runs in the child: load the solution, then each top-level test statement, and
# report one JSON line. Assertions of the form ``assert a == b`` report both sides.
_HARNESS = r'''
import ast, json, sys, traceback
try:
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (__CPU__, __CPU__ + 1))
    resource.setrlimit(resource.RLIMIT_AS, (__MEM__, __MEM__))
except Exception:
    pass
report = {"passed": 0, "failures": [], "error": None}
def done():
    sys.stdout.flush()
    print("\n" + __MARK__ + json.dumps(report), flush=True)
ns = {"__name__": "solution"}
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
except BaseException as exc:
    report["error"] = "the code raised while loading: " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    done(); sys.exit(0)
source = open("tests.py").read()
def shown(node):
    return ast.get_source_segment(source, node) or ast.dump(node)
def check(stmt):
    try:
        exec(compile(ast.Module([stmt], []), "tests.py", "exec"), ns)
        report["passed"] += 1
    except AssertionError:
        test = stmt.test
        why = "assertion failed"
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            try:
                got = eval(compile(ast.Expression(test.left), "tests.py", "eval"), ns)
                want = eval(compile(ast.Expression(test.comparators[0]), "tests.py", "eval"), ns)
                why = "got %r, expected %r" % (got, want)
            except BaseException:
                pass
        report["failures"].append("%s -> %s" % (shown(stmt), why))
    except BaseException as exc:
        report["failures"].append("%s -> %s" % (shown(stmt), "".join(traceback.format_exception_only(type(exc), exc)).strip()))
tests = []
for stmt in ast.parse(source).body:
    if isinstance(stmt, ast.Assert):
        check(stmt)
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test_"):
        exec(compile(ast.Module([stmt], []), "tests.py", "exec"), ns)
        tests.append(stmt.name)
    else:
        try:
            exec(compile(ast.Module([stmt], []), "tests.py", "exec"), ns)
        except BaseException as exc:
            report["failures"].append("%s -> %s" % (shown(stmt), "".join(traceback.format_exception_only(type(exc), exc)).strip()))
for name in tests:
    try:
        ns[name]()
        report["passed"] += 1
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"line {f.lineno}: {f.line}" for f in reversed(tb) if f.filename == "tests.py"), "")
        msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        report["failures"].append("%s -> %s %s" % (name, msg, where))
done()
'''


def run_tests(code: str, tests: str, *, timeout: float = 10.0, memory_mb: int = 512) -> TestReport:
    """Run ``tests`` against ``code`` in a child Python process and report.

    Blocking; the skill calls it in a worker thread. The child gets a fresh
    temporary directory as its working directory, ``-I`` (no user site, no
    ``PYTHON*`` variables, no script directory on ``sys.path``), an environment
    with only ``PATH``, and is killed with its process group after ``timeout``
    seconds.
    """
    if problem := _tests_problem(tests):
        return TestReport(0, (), problem, "")
    with tempfile.TemporaryDirectory(prefix="slmgraph-code-") as tmp:
        folder = Path(tmp)
        (folder / "solution.py").write_text(code, encoding="utf-8")
        (folder / "tests.py").write_text(tests, encoding="utf-8")
        harness = (_HARNESS.replace("__CPU__", str(int(timeout) + 1))
                   .replace("__MEM__", str(memory_mb * 1024 * 1024)).replace("__MARK__", repr(_MARK)))
        (folder / "harness.py").write_text(harness, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-I", "harness.py"],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", os.defpath)},
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            out, _ = proc.communicate()
            return TestReport(0, (), f"the tests timed out after {timeout:g} s (the process was killed)", _tail(out))
    text = out.decode("utf-8", "replace")
    head, mark, tail = text.rpartition(_MARK)
    if not mark:
        return TestReport(0, (), f"the test process crashed (exit code {proc.returncode})", _tail(out))
    report = json.loads(tail.strip().splitlines()[0])
    return TestReport(report["passed"], tuple(report["failures"]), report["error"], _tail(head.strip().encode()))


def _tests_problem(tests: str) -> str | None:
    """Why ``tests`` cannot check anything (they do not parse, or hold no assert
    statement and no ``test_`` function), or ``None``."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        return f"the tests do not parse: line {exc.lineno}: {exc.msg}"
    if not any(isinstance(n, ast.Assert) or isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and n.name.startswith("test_") for n in tree.body):
        return "the tests contain no assert statement and no test_ function"
    return None


def _kill(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass


def _tail(out: bytes, limit: int = 2000) -> str:
    text = out.decode("utf-8", "replace")
    return text if len(text) <= limit else "..." + text[-limit:]


_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _clean(code: str) -> str:
    match = _FENCE.match(code)
    return (match.group(1) if match else code).strip("\n")


def _defines(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name
               or isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
               for n in tree.body)


def _static_problem(task: CodeTask, code: str) -> str | None:
    code = _clean(code)
    if not code.strip():
        return "the code is empty"
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"the code does not parse: line {exc.lineno}: {exc.msg}"
    if task.function_name and not _defines(tree, task.function_name):
        return f"the code does not define {task.function_name!r}"
    return None


_INSTRUCTIONS = (
    "You write small, correct Python 3 functions. Write the complete code for the task, "
    "with the imports it needs, and no example usage, prints or tests. Put the code in "
    "the \"code\" field as plain Python source."
)
_EXAMPLES = (
    Example('{"task": "Return the larger of two numbers.", "function_name": "bigger"}',
            GeneratedCode(code="def bigger(a, b):\n    return a if a >= b else b\n")),
)


def _prompt(task: CodeTask) -> str:
    lines = [f"Task: {task.task.strip()}"]
    if task.function_name:
        lines.append(f"Define a function named {task.function_name}.")
    if task.tests:
        lines.append(f"The code must pass these tests:\n{task.tests.strip()}")
    return "\n".join(lines)


def generate_code_skill(*, model: str = "small", max_repairs: int = 2, timeout: float = 10.0) -> Skill:
    """Write a small Python function and check it.

    Acceptance: the code parses (and defines ``function_name`` when one is given);
    with tests, it passes them in a child process within ``timeout`` seconds. Code
    that does not parse is re-asked in the same conversation; code that fails its
    tests is re-asked with the failure attached; both at most ``max_repairs`` times.
    Code that still fails escalates with the failure in the detail and the code and
    failure in the draft.
    """
    if timeout <= 0:
        raise ConfigError("generate_code.timeout", "must be > 0")

    async def runner(skill: Skill, task: CodeTask, ctx: RunContext, node: str) -> Accepted | Rejected:
        writer = Skill(
            name=skill.name, description=skill.description, instructions=_INSTRUCTIONS,
            output_type=GeneratedCode, examples=_EXAMPLES, model=skill.model,
            acceptance=AcceptancePolicy(max_repairs=max_repairs, check=lambda _, out: _static_problem(task, out.code)),
        )
        if task.tests and (problem := _tests_problem(task.tests)):
            return Rejected(EscalationReason.BAD_INPUT, problem, task.model_dump(), 0)
        prompt, attempts = _prompt(task), 0
        for round_ in range(max_repairs + 1):
            outcome = await run_skill(writer, prompt, ctx, node=node)
            attempts += outcome.attempts
            if isinstance(outcome, Rejected):
                draft = outcome.draft.get("code") if isinstance(outcome.draft, dict) else outcome.draft
                return Rejected(outcome.reason, outcome.detail, {"code": draft, "failure": outcome.detail}, attempts)
            code = _clean(outcome.output.code)
            if not task.tests:
                return Accepted(CodeResult(code=code, tests_run=0), outcome.confidence, attempts)
            report = await asyncio.to_thread(run_tests, code, task.tests, timeout=timeout)
            if report.ok:
                return Accepted(CodeResult(code=code, tests_run=report.passed), outcome.confidence, attempts)
            failure = report.describe()
            prompt = (f"{_prompt(task)}\n\nThis attempt fails the tests:\n{code}\n\nFailure:\n{failure}\n\n"
                      "Write corrected code.")
        return Rejected(
            EscalationReason.FAILED_CHECK,
            f"the code fails its tests after {max_repairs + 1} attempt(s): {failure}",
            {"code": code, "failure": failure, "output": report.output},
            attempts,
        )

    return Skill(
        name="generate_code",
        description="write a small Python function for a task, optionally checked against tests",
        instructions=_INSTRUCTIONS,
        output_type=CodeResult,
        input_type=CodeTask,
        model=model,
        runner=runner,
        render=lambda o: o.code,
    )
