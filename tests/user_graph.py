"""A user's own LangGraph StateGraph made of slmgraph skill nodes (for tests/test_user_graph.py).

    START -> find (skill) -> fan-out: rate (skill, one task per clause) -> tally (plain Python) -> END

The models are FunctionModels that log each call to ``WORKDIR/calls.log``. Run as a
script (``python user_graph.py WORKDIR THREAD_ID``) it starts one run on a SQLite
checkpoint and SIGKILLs its own process inside ``tally``, after both skill nodes
have finished; the test then resumes the run in its own process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmgraph import AcceptancePolicy, SLMState, Skill, fan_out, skill_node
from slmgraph._harden import harden_models
from slmgraph.privacy import PrivacyPolicy
from slmgraph.graphs import add_run_list
from slmgraph.testing import FunctionModel

DB = "checkpoints.sqlite"
CONTRACT = "Payment within 30 days. Liability is unlimited. Either party may terminate with notice."


class ClauseList(BaseModel):
    clauses: list[str]


class Rating(BaseModel):
    risk: Literal["low", "high"]


class ReviewState(SLMState, total=False):
    contract: str
    clauses: dict | None
    ratings: Annotated[list[dict[str, Any]], add_run_list]
    high_risk: int


FIND = Skill(name="find", description="split a contract into clauses", instructions="FIND the clauses.",
             output_type=ClauseList)
# "medium" is not a Rating: the small model's answer for the liability clause is
# rejected, and that one clause escalates.
RATE = Skill(name="rate", description="rate one clause", instructions="RATE the clause.", output_type=Rating,
             acceptance=AcceptancePolicy(max_repairs=0))


def log(workdir: Path, line: str) -> None:
    with open(workdir / "calls.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def calls(workdir: Path) -> list[str]:
    path = workdir / "calls.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def models(workdir: Path, *, large: bool = True) -> dict:
    def small(messages, schema):
        prompt, text = messages[0].content, messages[-1].content
        if "FIND" in prompt:
            log(workdir, "small:find")
            return {"clauses": [c.strip() + "." for c in text.split(".") if c.strip()]}
        log(workdir, f"small:rate:{text}")
        return {"risk": "medium" if "unlimited" in text else "low"}

    def big(messages, schema):
        log(workdir, f"large:{messages[-1].content}")
        return {"risk": "high"}

    out = {"small": FunctionModel(small, name="small-fn")}
    if large:
        out["large"] = FunctionModel(big, name="large-fn", local=False)  # stands in for a remote model
    return out


def tally(state: ReviewState) -> dict:
    """A plain Python node: counts the high-risk clauses (and, as a script, dies once)."""
    if os.environ.get("USER_GRAPH_KILL") and not Path(os.environ["USER_GRAPH_KILL"]).exists():
        Path(os.environ["USER_GRAPH_KILL"]).write_text("armed")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"high_risk": sum(1 for r in state["ratings"] if (r["output"] or {}).get("risk") == "high")}


def build(workdir: Path, *, large: bool = True, wrap=None, prices=None) -> tuple[StateGraph, Any, Any]:
    bound = models(workdir, large=large)
    if wrap is not None:
        bound = {k: wrap(m) for k, m in bound.items()}
    # The large stand-in counts as remote, so the user hardens it with a privacy
    # policy, as a node factory refuses a remote model without one.
    bound = harden_models(bound, privacy=PrivacyPolicy(action="redact"))
    find = skill_node(FIND, models=bound, input="contract", output="clauses", starts_run=ReviewState, prices=prices)
    rate = skill_node(RATE, models=bound, input="item", output="ratings", collect=True, prices=prices)
    builder = StateGraph(ReviewState)
    builder.add_node("find", find)
    builder.add_node("rate", rate)
    builder.add_node("tally", tally)
    builder.add_edge(START, "find")
    builder.add_conditional_edges("find", fan_out(lambda s: (s.get("clauses") or {}).get("clauses"), "rate", empty="tally"),
                                  ["rate", "tally"])
    builder.add_edge("rate", "tally")
    builder.add_edge("tally", END)
    return builder, find, rate


async def _crash(workdir: Path, thread_id: str) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    builder, _, _ = build(workdir)
    async with AsyncSqliteSaver.from_conn_string(str(workdir / DB)) as saver:
        graph = builder.compile(checkpointer=saver)
        await graph.ainvoke({"contract": CONTRACT}, {"configurable": {"thread_id": thread_id}}, durability="sync")


if __name__ == "__main__":
    asyncio.run(_crash(Path(sys.argv[1]), sys.argv[2]))
