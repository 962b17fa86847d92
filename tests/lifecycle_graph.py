"""Helper for tests/test_run_lifecycle.py: a one-skill graph on a real SQLite file
whose every model call is logged, and the scenarios that need their own process.

Imported by the tests to build the *same* graph on the same file, and run as a
script (``python lifecycle_graph.py WORKDIR MODE [ARG]``):

* ``MODE=cancel-recording``: hold the file's write lock from another connection,
  start a run (its recording waits on the lock), cancel it, release the lock, and
  exit normally: the process is gone, as after a client disconnect and a restart;
* ``MODE=keyed-kill KEY``: start a run with idempotency key ``KEY`` whose model
  call SIGKILLs the process (once per WORKDIR);
* ``MODE=recover``: recover the interrupted runs, print their count.

Requests: one containing ``slow`` waits 120 s in its first model call (to be
cancelled mid-run; a retry of the same text answers at once), one containing ``fail`` gets an HTTP 503 from its model, one containing
``kill`` SIGKILLs the process the first time. Calls go to ``WORKDIR/calls.log``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from pydantic import BaseModel

from slmgraph import ModelHTTPError, Skill, build_graph
from slmgraph.graphs import SLMGraph
from slmgraph.testing import FunctionModel

DB = "runs.sqlite"


class Reply(BaseModel):
    text: str


def calls(workdir: Path) -> list[str]:
    path = Path(workdir) / "calls.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def build(workdir: str | Path, checkpoint=None, **options) -> SLMGraph:
    """The graph under test, checkpointed to ``workdir/runs.sqlite`` (or ``checkpoint``)."""
    workdir = Path(workdir)

    async def answer(messages, schema):
        request = messages[-1].content
        with open(workdir / "calls.log", "a", encoding="utf-8") as f:
            f.write(request.replace("\n", " ") + "\n")
        if "kill" in request and not (workdir / "killed").exists():
            (workdir / "killed").write_text("once")
            os.kill(os.getpid(), signal.SIGKILL)
        marker = workdir / f"slowed-{hashlib.sha1(request.encode()).hexdigest()[:12]}"
        if "slow" in request and not marker.exists():
            marker.write_text("once")
            await asyncio.sleep(120)
        if "fail" in request:
            raise ModelHTTPError("the backend is overloaded", status_code=503, model="m")
        return {"text": f"ok: {request[-40:]}"}

    skill = Skill(name="answer", description="answers", instructions="Answer.", output_type=Reply)
    return build_graph([skill], models={"small": FunctionModel(answer, name="m")},
                       checkpoint=checkpoint if checkpoint is not None else workdir / DB, **options)


async def cancel_while_recording(workdir: Path) -> dict:
    graph = build(workdir)
    await graph.ainvoke("warm up the file", thread_id="warm")
    holder = sqlite3.connect(workdir / DB, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as a checkpointer mid-transaction holds it
    # Released by a thread of its own, not through the loop: whatever the run does
    # on cancellation, the lock goes away.
    threading.Timer(1.2, holder.execute, ("COMMIT",)).start()
    run = asyncio.create_task(graph.ainvoke("recorded while its client left", thread_id="gone"))
    await asyncio.sleep(1.0)  # the run is waiting to be recorded
    run.cancel()
    try:
        await run
        outcome = "finished"
    except asyncio.CancelledError:
        outcome = "cancelled"
    holder.close()
    return {"outcome": outcome}


def main(argv: list[str]) -> int:
    workdir, mode = Path(argv[1]), argv[2]
    if mode == "cancel-recording":
        print(json.dumps(asyncio.run(cancel_while_recording(workdir))))
        return 0
    if mode == "keyed-kill":
        build(workdir).invoke("please kill the process", thread_id="keyed", idempotency_key=argv[3])
        return 0  # not reached
    if mode == "recover":
        print(json.dumps(len(build(workdir).recover())))
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
