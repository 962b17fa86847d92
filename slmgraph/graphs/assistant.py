"""The assistant chat graph: a multi-turn assistant that also summarises and writes code.

Rules route requests that start with "summarize:" (or "tl;dr:") to the
``summarize`` skill and requests to write a function (or a JSON code task) to
``generate_code``; everything else goes to the ``answer`` skill, which remembers
the thread's earlier turns and escalates word problems and other multi-step
reasoning to the large model.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..agents._escalation import EscalationAgent
from ..agents._router import Rule, RulesRouter
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._answer import answer_skill
from ..skills._codegen import generate_code_skill
from ..skills._summarize import COMMAND_PATTERN, summarize_skill
from ._graph import SLMGraph, build_graph

__all__ = ["assistant_graph", "ASSISTANT_RULES"]

#: How the assistant routes: the first matching rule wins; no match goes to ``answer``.
ASSISTANT_RULES = (
    Rule("summarize", (COMMAND_PATTERN,)),
    Rule("generate_code", (
        r"^\s*\{\s*\"task\"\s*:",
        r"^\s*(?:please\s+)?(?:write|implement|code|create|generate)\b[^\n.?!]{0,60}?"
        r"\b(?:python\s+)?(?:function|method|class|script|program|code)\b",
    )),
)


def assistant_graph(
    models: Mapping[str, Model], *, config: Config | None = None, prices: PriceTable | None = None,
) -> SLMGraph:
    """A chat assistant on one thread per conversation (pass ``thread_id``).

    Skills: ``answer`` (default; conversation memory; multi-step reasoning
    escalates), ``summarize`` ("summarize: <text>"), ``generate_code``
    ("write a function that ...", or JSON ``{"task": ..., "function_name": ...,
    "tests": ...}``). The large model may call ``summarize`` and ``generate_code``
    as tools.
    """
    cfg = config or Config()
    return build_graph(
        [answer_skill(), summarize_skill(), generate_code_skill()],
        models=models,
        router=RulesRouter(ASSISTANT_RULES, default="answer"),
        route_threshold=cfg.route_threshold,
        escalation=EscalationAgent(max_steps=cfg.max_steps, tools=("summarize", "generate_code")),
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="assistant",
    )
