"""Skill nodes in your own LangGraph StateGraph: two skills and a plain Python node.

    START -> triage (skill) -> route_reply (plain Python) -> draft_reply (skill) -> END

The state is your own TypedDict; mixing in ``SLMState`` adds slmgraph's fields
(``ledger``, ``escalations``, ``run_id``) with their reducers. Each skill node reads
its input from the state, writes its typed output (as JSON) to a key, and appends
its model calls to the ledger. A rejected answer escalates *that* sub-task to the
large model when one is configured, and otherwise is recorded as
``escalation_needed``.

    python examples/own_graph.py "My card was stolen yesterday, please help"

Runs on the embedded model by default (nothing to start); set OLLAMA_HOST /
SLMGRAPH_* to use your own models (see the README's configuration section).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmgraph import SLMState, Skill, load_config, models_from_config, skill_node
from slmgraph.graphs import RunResult


class Ticket(BaseModel):
    topic: Literal["card", "payment", "account", "other"]
    urgent: bool


class Reply(BaseModel):
    reply: str


class SupportState(SLMState, total=False):
    message: str
    ticket: dict | None
    queue: str
    reply: dict | None


TRIAGE = Skill(
    name="triage",
    description="sort a support message by topic and urgency",
    instructions="Classify the customer's message: its topic, and whether it is urgent (lost or stolen cards, fraud).",
    output_type=Ticket,
)
DRAFT = Skill(
    name="draft_reply",
    description="write a short first reply to a customer",
    instructions="Write a two-sentence, friendly first reply to the customer's message. Do not promise refunds.",
    output_type=Reply,
)


def route_reply(state: SupportState) -> dict:
    """Plain Python between the skills: pick the queue from the typed triage output."""
    ticket = Ticket.model_validate(state["ticket"]) if state.get("ticket") else None
    if ticket is None:
        return {"queue": "human"}
    return {"queue": "priority" if ticket.urgent else ticket.topic}


def build(models) -> StateGraph:
    triage = skill_node(TRIAGE, models=models, input="message", output="ticket", starts_run=True)
    draft = skill_node(DRAFT, models=models, input="message", output="reply")
    builder = StateGraph(SupportState)
    builder.add_node("triage", triage)
    builder.add_node("route_reply", route_reply)
    builder.add_node("draft_reply", draft)
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "route_reply")
    builder.add_edge("route_reply", "draft_reply")
    builder.add_edge("draft_reply", END)
    return builder


async def main(message: str) -> None:
    graph = build(models_from_config(load_config())).compile()
    state = await graph.ainvoke({"message": message})
    result = RunResult.from_state(state, thread_id="example", request_key="message")
    print(f"queue:   {state['queue']}")
    print(f"ticket:  {state.get('ticket')}")
    print(f"reply:   {(state.get('reply') or {}).get('reply', '(escalation needed)')}")
    print(f"status:  {result.status}: {result.message}")
    print(f"ledger:  {result.totals.calls} calls, {result.totals.prompt_tokens}+{result.totals.completion_tokens} tokens")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "My card was stolen yesterday, please help"))
