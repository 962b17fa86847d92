"""Help-desk triage: one intent out of many, or "none fits" and escalate.

The classify skill retrieves the labelled examples nearest to each message, keeps
the 5 closest intents as candidates, and lets the small model choose among them
(or say none fits). With ../shared/datasets/banking77 present it uses the 77
Banking77 intents, with a sample of the train split as the example bank
(Banking77: Casanueva et al. 2020, PolyAI, CC BY 4.0); otherwise the graph's
built-in bank of 12 intents.

    python examples/helpdesk_triage.py [N]
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

from slmgraph import load_config, models_from_config, prices_from_config
from slmgraph.graphs.helpdesk import helpdesk_graph
from slmgraph.models import default_embedder

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "banking77"
PER_INTENT = 15  # bank examples per intent: enough for retrieval, quick to embed
BUILTIN_TICKETS = [
    "My card still hasn't arrived, it's been two weeks.",
    "Why was I charged twice for the same coffee?",
    "Can I get a mortgage to buy a house?",  # no built-in intent fits
]


def _rows(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def load() -> tuple[list[str] | None, list[tuple[str, str]] | None, list[str], str]:
    """(labels, examples, tickets, source); ``None`` labels/examples mean the built-in bank."""
    if not (DATA / "categories.json").exists():
        return None, None, BUILTIN_TICKETS, "the graph's built-in example bank (12 intents)"
    labels = json.loads((DATA / "categories.json").read_text())
    per: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for text, label in _rows("train"):
        if len(per[label]) < PER_INTENT:
            per[label].append((text, label))
    examples = [row for label in labels for row in per[label]]
    tickets = [text for text, _ in _rows("test")[::617]]
    source = "Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0): train sample as bank, test rows as tickets"
    return labels, examples, tickets, source


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    labels, examples, tickets, source = load()
    config = load_config()
    embedder = default_embedder()
    graph = helpdesk_graph(
        models_from_config(config), config=config, prices=prices_from_config(config),
        embedder=embedder, labels=labels, examples=examples,
    )
    print(f"Data: {source}\nEncoder: {embedder.name}")
    for ticket in tickets[:n]:
        r = graph.invoke(ticket)
        print(f"\n> {ticket}\n  route={r.route} status={r.status} intent={r.answer}")
        shown = r.output_json or (r.draft if isinstance(r.draft, dict) else {}) or {}
        nearest = shown.get("candidates") or shown.get("nearest") or []
        print("  candidates: " + ", ".join(f"{c['label']} ({c['score']:.2f})" for c in nearest[:3]))
        if r.escalation_reason:
            print(f"  escalated because: {r.escalation_reason} ({r.escalation_detail})")
            if shown.get("proposed_label"):
                print(f"  proposed new intent: {shown['proposed_label']}")
        print(f"  ledger: {r.totals.calls} calls, {r.totals.prompt_tokens}+{r.totals.completion_tokens} tokens, "
              f"${r.totals.cost_usd:.6f} (all-large would be ${r.totals.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
