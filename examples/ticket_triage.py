"""Help-desk triage over the Banking77 intents.

Each ticket is routed to a triage skill whose output is constrained to the 77
Banking77 categories; unconfident answers escalate. Uses the Banking77 dataset in
../shared/datasets/banking77 when present (Casanueva et al., 2020, CC BY 4.0) and a
small built-in category list otherwise.

    python examples/ticket_triage.py [N]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from slmgraph import build_graph, load_config, models_from_config, prices_from_config
from slmgraph.graphs import BUILTIN_CATEGORIES, triage_skill

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "banking77"
FALLBACK_TICKETS = [
    ("My card still hasn't arrived, it's been two weeks.", "card_arrival"),
    ("Someone stole my wallet with my card in it!", "card_lost_or_stolen"),
    ("Why was I charged twice for the same coffee?", "wrong_charge"),
]


def load() -> tuple[list[str], list[tuple[str, str]], str]:
    if (DATA / "categories.json").exists():
        categories = json.loads((DATA / "categories.json").read_text())
        with open(DATA / "test.csv", newline="") as f:
            rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
        return categories, rows[::150], "Banking77 test split (CC BY 4.0, PolyAI)"
    return list(BUILTIN_CATEGORIES), FALLBACK_TICKETS, "built-in sample tickets"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    categories, tickets, source = load()
    print(f"{len(categories)} categories; tickets from {source}")
    config = load_config()
    graph = build_graph(
        [triage_skill(categories, min_confidence=0.6)],
        models=models_from_config(config),
        prices=prices_from_config(config),
        checkpoint=config.checkpoint,
        name="ticket_triage",
    )
    right = 0
    for text, gold in tickets[:n]:
        r = graph.invoke(text)
        answer = r.output_json or (r.draft if isinstance(r.draft, dict) else {})
        got = answer.get("category")
        right += got == gold
        print(f"- {text[:70]!r}\n  gold={gold} got={got} status={r.status}"
              + (f" ({r.escalation_reason})" if r.escalation_reason else ""))
    print(f"{right}/{min(n, len(tickets))} match the gold label")


if __name__ == "__main__":
    main()
