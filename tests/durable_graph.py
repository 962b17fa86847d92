"""Helper for tests/test_durability.py: a graph that crashes where it is told to.

Imported by the tests to rebuild the *same* graph on the same SQLite file, and run
as a script (``python durable_graph.py WORKDIR MODE THREAD_ID [KILL_AT]``):

* ``MODE=crash``: one run that SIGKILLs its own process at ``KILL_AT``;
* ``MODE=slow``: one run whose nodes each sleep, so two processes started together
  on one thread can be checked for interleaving;
* ``MODE=recover``: recover the interrupted runs, print their thread ids.

The graph: the router (rules) picks ``pay``; ``pay`` (a runner skill) asks the
small model, charges through ``ctx.effect("charge", ...)``, and always asks for
review, so the run escalates; the large model calls the ``lookup`` skill once,
then answers. Node executions go to ``WORKDIR/nodes.log``, effect executions to
``WORKDIR/effects.log``.

Kill points (``KILL_AT``):

* ``accepted``: the run is in the runs table, the graph has not started;
* ``ckpt:N``: right after the checkpoint of step N is on disk (-1 input,
  0 start, 1 router, 2 specialist, 3 escalation: the final one);
* ``in:router``, ``in:specialist`` (after the model call, before the effect),
  ``in:after-effect`` (the effect ran and is stored, the node has not returned),
  ``in:escalation`` (the tool call ran; the large model's second call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import os
import signal
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from slmgraph import AcceptancePolicy, EscalationReason, Rejected, Rule, RulesRouter, Skill, build_graph, run_skill
from slmgraph.graphs import SLMGraph
from slmgraph.testing import FunctionModel

DB = "checkpoints.sqlite"
REQUEST = "please pay invoice 42"
ANSWER = "paid invoice 42 after review"
KILL_POINTS = [
    "accepted", "ckpt:-1", "ckpt:0", "in:router", "ckpt:1", "in:specialist",
    "in:after-effect", "ckpt:2", "in:escalation", "ckpt:3",
]
ENV = "DURABLE_TEST_KILL_AT"


class Invoice(BaseModel):
    invoice: str
    amount: int


class Found(BaseModel):
    status: str


def append(workdir: Path, name: str, line: str) -> None:
    with open(workdir / name, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lines(workdir: Path, name: str) -> list[str]:
    path = workdir / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


class StoreView:
    """Synchronous access to a runs store for a test's assertions: each call runs on
    its own event loop and closes the store's connection afterwards."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name: str):
        method = getattr(self._store, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def call(*args, **kwargs):
            async def go():
                try:
                    return await method(*args, **kwargs)
                finally:
                    await self._store.close()

            # A thread of its own: the test itself may be running an event loop.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(lambda: asyncio.run(go())).result()

        return call


def view(path: str | Path) -> StoreView:
    """The runs store in the SQLite file at ``path``, for assertions."""
    from slmgraph.graphs._runs_sqlite import SqliteRunStore

    return StoreView(SqliteRunStore(path))


def maybe_kill(point: str) -> None:
    """SIGKILL this process if ``point`` is the chosen kill point (child only)."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class LoggingRouter(RulesRouter):
    def __init__(self, workdir: Path, slow_s: float) -> None:
        super().__init__([Rule("pay", (r"\bpay\b",))], default="pay")
        self.workdir, self.slow_s = workdir, slow_s

    async def route(self, request, skills, ctx):
        tag = os.environ.get("DURABLE_TEST_TAG", "")
        append(self.workdir, "nodes.log", f"router {tag}".strip())
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        maybe_kill("in:router")
        return await super().route(request, skills, ctx)


INNER = Skill(name="read_invoice", description="reads an invoice", instructions="Read the INVOICE.",
              output_type=Invoice, acceptance=AcceptancePolicy(max_repairs=0))
LOOKUP = Skill(name="lookup", description="looks an invoice up", instructions="LOOKUP the invoice.",
               output_type=Found, acceptance=AcceptancePolicy(max_repairs=0))


def build(workdir: str | Path, *, slow_s: float = 0.0, **options) -> SLMGraph:
    """The graph under test, checkpointed to ``workdir/checkpoints.sqlite``."""
    workdir = Path(workdir)
    tag = os.environ.get("DURABLE_TEST_TAG", "")

    async def pay(skill, data, ctx, node):
        append(workdir, "nodes.log", f"specialist {tag}".strip())
        if slow_s:
            await asyncio.sleep(slow_s)
        outcome = await run_skill(INNER, data, ctx, node=node)
        maybe_kill("in:specialist")

        def charge(idempotency_key: str) -> dict:
            append(workdir, "effects.log", f"charge {idempotency_key}")
            return {"receipt": f"r-{len(lines(workdir, 'effects.log'))}", "amount": 120}

        receipt = await ctx.effect("charge", charge)
        maybe_kill("in:after-effect")
        draft = {"invoice": outcome.output.model_dump(), "receipt": receipt}
        return Rejected(EscalationReason.FAILED_CHECK, "a payment always needs review", draft, 1)

    pay_skill = Skill(name="pay", description="pays an invoice", instructions="Pay it.",
                      output_type=Invoice, runner=pay)

    def small(messages, schema):
        if "LOOKUP" in messages[0].content:
            return {"status": "open"}
        return {"invoice": "42", "amount": 120}

    def large(messages, schema):
        if len(messages) == 2:  # the escalation node's first call
            append(workdir, "nodes.log", f"escalation {tag}".strip())
            if slow_s:
                time.sleep(slow_s)
            return {"action": "call_skill", "skill": "lookup", "input": "invoice 42"}
        maybe_kill("in:escalation")
        return {"action": "final", "answer": ANSWER}

    return build_graph(
        [pay_skill, LOOKUP],
        models={"small": FunctionModel(small, name="small-fn"), "large": FunctionModel(large, name="large-fn")},
        router=LoggingRouter(workdir, slow_s),
        checkpoint=workdir / DB,
        **options,
    )


def arm_checkpoint_kills() -> None:
    """Patch the SQLite saver and the runs table so the ``ckpt:N`` and ``accepted``
    kill points fire right after that write is committed."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from slmgraph.graphs._runs_sqlite import SqliteRunStore

    put, begin = AsyncSqliteSaver.aput, SqliteRunStore.begin

    async def aput(self, config, checkpoint, metadata, new_versions):
        out = await put(self, config, checkpoint, metadata, new_versions)
        maybe_kill(f"ckpt:{metadata.get('step')}")
        return out

    async def begin_then_kill(self, *args):
        out = await begin(self, *args)
        maybe_kill("accepted")
        return out

    AsyncSqliteSaver.aput = aput
    SqliteRunStore.begin = begin_then_kill


def main(argv: list[str]) -> int:
    workdir, mode, thread_id = Path(argv[1]), argv[2], argv[3]
    if mode == "crash":
        os.environ[ENV] = argv[4]
        arm_checkpoint_kills()
        build(workdir).invoke(REQUEST, thread_id=thread_id)
        return 0  # not reached: the kill fires
    if mode == "slow":
        result = build(workdir, slow_s=0.3).invoke(REQUEST, thread_id=thread_id)
        print(json.dumps({"run_id": result.run_id, "status": result.status}))
        return 0
    if mode == "recover":
        results = build(workdir).recover()
        print(json.dumps([r.thread_id for r in results]))
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
