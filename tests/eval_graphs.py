"""A scripted graph for the eval tests, importable as ``eval_graphs:synthetic_graph``.

Each request spells what the small model answers and how sure it is:
``"case 7 conf=0.35 small=B"``. The small model (a :class:`FunctionModel`) replies
``{"label": "B"}`` with per-token logprob ``log(0.35)``, so the skill's confidence
is exactly 0.35. ``EVAL_TEST_SLEEP`` adds latency per call, and ``EVAL_TEST_LOG``
names a file where every call appends its case, so tests can see what ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re

from pydantic import BaseModel

from slmgraph import EscalationAgent, ModelReply, RulesRouter, Skill, build_graph
from slmgraph.models import TokenLogprob, Usage
from slmgraph.skills import AcceptancePolicy
from slmgraph.testing import FunctionModel

_CASE = re.compile(r"case (\S+) conf=([0-9.]+) small=(\S+)")


class Label(BaseModel):
    label: str


async def _small(messages, schema):
    m = _CASE.search(messages[-1].content)
    assert m, messages[-1].content
    case, conf, label = m.group(1), float(m.group(2)), m.group(3)
    if log := os.environ.get("EVAL_TEST_LOG"):
        with open(log, "a") as f:
            f.write(case + "\n")
    if delay := float(os.environ.get("EVAL_TEST_SLEEP", "0")):
        await asyncio.sleep(delay)
    if label == "NONE":
        return "not json at all"
    text = json.dumps({"label": label})
    return ModelReply(
        text=text, parsed={"label": label}, model="scripted-small", provider="test",
        usage=Usage(20, 5), logprobs=(TokenLogprob(text, math.log(max(conf, 1e-9))),),
    )


def synthetic_graph(models, *, config=None, prices=None):
    skill = Skill(
        name="label",
        description="label a case",
        instructions="Give the case's label.",
        output_type=Label,
        acceptance=AcceptancePolicy(max_repairs=0, min_confidence=0.5),
    )
    return build_graph(
        [skill],
        models={**models, "small": FunctionModel(_small, name="scripted-small")},
        router=RulesRouter([], default="label"),
        route_threshold=config.route_threshold if config else 0.5,
        escalation=EscalationAgent(tools=()),
        prices=prices,
        checkpoint=None,
        name="synthetic",
    )


def synthetic_rows(n: int, *, right_from: float = 0.5) -> list[dict]:
    """``n`` cases with confidences spread evenly over (0, 1); the small model is right
    exactly when its confidence is at least ``right_from``."""
    rows = []
    for i in range(n):
        conf = (i + 0.5) / n
        label = "A" if conf >= right_from else "B"
        rows.append({"id": f"r{i}", "input": f"case r{i} conf={conf:.4f} small={label}", "expected": "A"})
    return rows
