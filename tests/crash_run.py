"""Helper for tests/test_checkpoint_resume.py: a graph that really crashes mid-run.

Imported by the test to rebuild the *same* graph on the same SQLite file, and run
as a script (``python crash_run.py WORKDIR MODE THREAD_ID``) to start a run that
SIGKILLs its own process inside a node.

Every node execution appends one line to ``WORKDIR/calls.log``:

* ``router``               -- the router node ran (a counting RulesRouter);
* ``specialist:<skill>``   -- the small model was called by a specialist;
* ``escalation``           -- the large model was called by the escalation agent.

MODE says where the crash happens:

* ``escalation``: the request routes to ``strict``, whose check always fails
  (``max_repairs=0``), so it escalates; the large model's first call kills the
  process, after router and specialist have finished.
* ``specialist``: the request routes to ``lenient``; the small model's first call
  kills the process, after the router has finished.

A crash happens only once per WORKDIR: the killing call first writes an
``armed-<mode>`` marker, and later calls (the resume, in the test's process) see
it and answer normally.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from slmgraph import AcceptancePolicy, Rule, RulesRouter, Skill, build_graph
from slmgraph.graphs import SLMGraph
from slmgraph.models._base import Message
from slmgraph.testing import FunctionModel

LOG = "calls.log"
DB = "checkpoints.sqlite"
ESCALATED_ANSWER = "the large model's answer"
STRICT_REQUEST = "please do the strict thing"
LENIENT_REQUEST = "please do the lenient thing"


class Label(BaseModel):
    label: str


def log(workdir: Path, line: str) -> None:
    with open(workdir / LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def calls(workdir: Path) -> list[str]:
    path = workdir / LOG
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def crash_once(workdir: Path, mode: str) -> None:
    """SIGKILL this process the first time ``mode``'s crash point is reached."""
    armed = workdir / f"armed-{mode}"
    if armed.exists():
        return
    armed.write_text("armed")
    os.kill(os.getpid(), signal.SIGKILL)


class CountingRouter(RulesRouter):
    """A RulesRouter that logs each execution of the router node."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(
            [Rule("strict", (r"\bstrict\b",)), Rule("lenient", (r"\blenient\b",))],
            default="lenient",
        )
        self.workdir = workdir

    async def route(self, request, skills, ctx):
        log(self.workdir, "router")
        return await super().route(request, skills, ctx)


STRICT = Skill(
    name="strict",
    description="does the strict thing",
    instructions="You are the STRICT skill.",
    output_type=Label,
    acceptance=AcceptancePolicy(max_repairs=0, check=lambda _in, _out: "never good enough"),
)
LENIENT = Skill(
    name="lenient",
    description="does the lenient thing",
    instructions="You are the LENIENT skill.",
    output_type=Label,
    acceptance=AcceptancePolicy(max_repairs=0),
)


def build(workdir: str | Path, mode: str = "escalation") -> SLMGraph:
    """The graph under test, checkpointed to ``workdir/checkpoints.sqlite``."""
    workdir = Path(workdir)

    def small(messages: Sequence[Message], schema):
        skill = "strict" if "STRICT" in messages[0].content else "lenient"
        log(workdir, f"specialist:{skill}")
        if mode == "specialist":
            crash_once(workdir, mode)
        return {"label": f"{skill}-draft"}

    def large(messages: Sequence[Message], schema):
        log(workdir, "escalation")
        if mode == "escalation":
            crash_once(workdir, mode)
        return {"action": "final", "answer": ESCALATED_ANSWER}

    return build_graph(
        [STRICT, LENIENT],
        models={"small": FunctionModel(small, name="small-fn"), "large": FunctionModel(large, name="large-fn")},
        router=CountingRouter(workdir),
        checkpoint=workdir / DB,
    )


def main(argv: list[str]) -> int:
    workdir, mode, thread_id = Path(argv[1]), argv[2], argv[3]
    request = STRICT_REQUEST if mode == "escalation" else LENIENT_REQUEST
    build(workdir, mode).invoke(request, thread_id=thread_id)
    return 0  # not reached when the crash fires


if __name__ == "__main__":
    sys.exit(main(sys.argv))
