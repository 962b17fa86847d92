"""Parse commands: free text becomes one of a few declared commands with typed
arguments. A complete command is answered, a command missing an argument comes
back as ``needs_argument`` with the question to ask, and an unknown command
escalates (``none_fits``). Argument values the model makes up are never kept.

    python examples/parse_command.py
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from slmgraph import build_graph, load_config, models_from_config, prices_from_config
from slmgraph.skills import CommandTemplate, parse_command_skill

TEMPLATES = [
    CommandTemplate("set_timer", "start a countdown timer",
                    {"minutes": Annotated[int, Field(ge=1, description="how long the timer runs")]}),
    CommandTemplate("send_money", "send money to a person", {"amount": float, "to": str},
                    questions={"amount": "How much money should I send?"}),
    CommandTemplate("turn_on", "switch on a device", {"device": str}),
]


def main() -> None:
    config = load_config()
    graph = build_graph(
        [parse_command_skill(TEMPLATES)],
        models=models_from_config(config),
        prices=prices_from_config(config),
        checkpoint=config.checkpoint,
        name="parse_command",
    )
    for request in (
        "Set a timer for 10 minutes",         # complete
        "Send some money to Alice",           # the amount is missing
        "Book me a table for two tonight",    # no command fits
    ):
        r = graph.invoke(request)
        print(f"\n> {request}\n  status={r.status}")
        if r.output_json is not None:
            print(f"  {r.answer}")
        if r.escalation_reason:
            print(f"  escalated because: {r.escalation_reason} ({r.escalation_detail})")
        print(f"  ledger: {r.totals.calls} calls, {r.totals.prompt_tokens}+{r.totals.completion_tokens} tokens")


if __name__ == "__main__":
    main()
