"""Sentiment over a batch of reviews: a label, an aspect and a confidence per text,
and counts over the batch.

The reviews below were written for this example. Runs on the embedded SmolLM2-135M
model with nothing else installed (a weak model: expect some wrong labels and
unsure texts); texts it is unsure of are listed, and when too many are unsure the
run escalates.

    python examples/sentiment_batch.py            # the built-in reviews
    python examples/sentiment_batch.py FILE       # one review per line
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slmgraph import build_graph, load_config, models_from_config, prices_from_config
from slmgraph.skills import sentiment_batch_skill

REVIEWS = [
    "Arrived a day early and well packed. Very pleased.",
    "The price went up twice this year and I get nothing extra for it.",
    "The woman at the help desk sorted out my problem in two minutes.",
    "Parcel was left in the rain and the manual was soaked.",
    "It does what it says. Nothing more to add.",
    "Cheaper than the shop down the road, and better quality too.",
    "Nobody answered the phone for three days.",
]


def main() -> None:
    texts = Path(sys.argv[1]).read_text().splitlines() if len(sys.argv) > 1 else REVIEWS
    config = load_config()
    graph = build_graph(
        [sentiment_batch_skill(aspects=["delivery", "price", "support", "quality"])],
        models=models_from_config(config),
        prices=prices_from_config(config),
        checkpoint=config.checkpoint,
        name="sentiment_batch",
    )
    r = graph.invoke(json.dumps(texts))
    print(f"status={r.status} ({r.message})")
    if r.escalation_reason:
        print(f"escalated because: {r.escalation_reason} ({r.escalation_detail})")
    report = r.output_json or (r.draft if isinstance(r.draft, dict) else None)
    if report:
        print("\ncounts:", ", ".join(f"{n} {label}" for label, n in report["counts"].items()))
        for aspect, counts in report["by_aspect"].items():
            print(f"  {aspect}: " + ", ".join(f"{n} {label}" for label, n in counts.items()))
        print()
        for item in report["items"]:
            conf = f"{item['confidence']:.2f}" if item["confidence"] is not None else "-"
            flag = "  <- unsure" if item["unsure"] else ""
            print(f"{item['item']:>2}. {str(item['label']):8} {str(item['aspect']):9} conf={conf}  {item['text'][:60]}{flag}")
    if r.status == "escalated":
        print(f"\nlarge model:\n{r.answer}")
    t = r.totals
    print(f"\nledger: {t.calls} calls, {t.prompt_tokens}+{t.completion_tokens} tokens, ${t.cost_usd:.6f} "
          f"(all-large would be ${t.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
