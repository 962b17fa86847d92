"""Quickstart: two typed skills, a router, escalation, and the ledger.

Runs on the embedded SmolLM2-135M model with nothing else installed; uses Ollama
when its server answers (see README), and a large model when one is configured
(SLMGRAPH_LARGE_MODEL + OPENAI_BASE_URL / OPENAI_API_KEY).

    python examples/quickstart.py
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from slmgraph import (
    AcceptancePolicy,
    ChainRouter,
    Example,
    ModelRouter,
    Rule,
    RulesRouter,
    Skill,
    build_graph,
    load_config,
    models_from_config,
    prices_from_config,
)


class Sentiment(BaseModel):
    sentiment: Literal["positive", "neutral", "negative"]


class Command(BaseModel):
    action: Literal["turn_on", "turn_off", "set_temperature", "unknown"]
    device: str


sentiment = Skill(
    name="sentiment",
    description="rate whether a review or message is positive, neutral or negative",
    instructions="Rate the sentiment the writer expresses.",
    output_type=Sentiment,
    examples=[Example("Terrible service, never again.", Sentiment(sentiment="negative"))],
    acceptance=AcceptancePolicy(min_confidence=0.6),
)

home = Skill(
    name="home_command",
    description="turn a smart-home command into an action and a device",
    instructions="Turn the user's smart-home command into an action and the device it names.",
    output_type=Command,
    examples=[Example("switch off the kitchen lights", Command(action="turn_off", device="kitchen lights"))],
    acceptance=AcceptancePolicy(check=lambda inp, out: "unknown action" if out.action == "unknown" else None),
)


def main() -> None:
    config = load_config()
    graph = build_graph(
        [sentiment, home],
        models=models_from_config(config),  # {"small": ..., "large": ... if configured}
        router=ChainRouter([RulesRouter([Rule("home_command", (r"\b(turn|switch)\b",))]), ModelRouter()]),
        prices=prices_from_config(config),
        checkpoint=config.checkpoint,
    )
    for request in (
        "Turn on the living room lamp",
        "The delivery was late but the food was great. Review: 4/5",
        "If a train leaves at 3pm going 60 km/h, when does it cover 150 km?",
    ):
        r = graph.invoke(request)
        print(f"\n> {request}\n  route={r.route} status={r.status} answer={r.answer}")
        if r.escalation_reason:
            print(f"  escalated because: {r.escalation_reason} ({r.escalation_detail})")
        print(f"  ledger: {r.totals.calls} calls, {r.totals.prompt_tokens}+{r.totals.completion_tokens} tokens, "
              f"${r.totals.cost_usd:.6f} (all-large would be ${r.totals.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
