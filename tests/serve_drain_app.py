"""A served echo graph whose model takes ``--delay`` seconds a call (``inf``: until
killed), for the SIGTERM drain tests: ``python serve_drain_app.py CHECKPOINT PORT
DELAY DRAIN``."""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from slmgraph import Rule, RulesRouter, Skill, build_graph
from slmgraph.serve import ServeConfig, serve
from slmgraph.testing import FunctionModel


class Reply(BaseModel):
    text: str


def graph(checkpoint: str, delay: float):
    async def slow(msgs, schema):
        await asyncio.sleep(delay if delay != float("inf") else 3600)
        return {"text": "done: " + msgs[-1].content.rsplit("\n", 1)[-1]}

    skill = Skill(name="echo", description="echo", instructions="Echo the user.", output_type=Reply)
    return build_graph([skill], models={"small": FunctionModel(slow, name="slow")},
                       router=RulesRouter([Rule("echo", (r".",))]), checkpoint=checkpoint, name="echo")


if __name__ == "__main__":
    checkpoint, port, delay, drain = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    serve(graph(checkpoint, delay), ServeConfig(port=port, drain_seconds=drain), log_level="info")
