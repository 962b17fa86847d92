"""A short multi-turn conversation with the assistant chat graph, on one thread.

The assistant answers simple questions on the small model and remembers the
conversation (each turn runs on the same thread id, checkpointed to SQLite). Rules
send "summarize: ..." to the summarize skill and "write a function ..." to the
generate_code skill. A word problem is recognised as multi-step reasoning and
escalates: on the embedded default, with no large model configured, that turn ends
as ``escalation_needed``; with SLMGRAPH_LARGE_MODEL set, the large model answers it.

    python examples/assistant_chat.py

The word problem is the first problem of the GSM8K test split (Cobbe et al. 2021,
OpenAI, MIT license) when ../shared/datasets/gsm8k is present, and a built-in one
otherwise.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from slmgraph import load_config, models_from_config, prices_from_config
from slmgraph.graphs.assistant import assistant_graph

GSM8K = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "gsm8k" / "test.jsonl"
BUILT_IN_PROBLEM = (
    "A baker makes 24 rolls each morning. She sells 15 of them at $2 each and gives half of the "
    "rest to a neighbour. How much money does she make in a week, and how many rolls does she give away?"
)


def word_problem() -> tuple[str, str]:
    if GSM8K.exists():
        first = json.loads(GSM8K.read_text().splitlines()[0])
        return first["question"], "GSM8K test problem 1 (Cobbe et al. 2021, OpenAI, MIT)"
    return BUILT_IN_PROBLEM, "a built-in word problem"


def main() -> None:
    config = load_config()
    graph = assistant_graph(models_from_config(config), config=config, prices=prices_from_config(config))
    thread = f"assistant-demo-{uuid.uuid4().hex[:8]}"
    problem, source = word_problem()
    turns = [
        "Hi! My name is Ada and I run a small bakery in Lisbon.",
        "What is my name?",
        "summarize: Our bakery opens at seven. We bake sourdough, rye and sweet buns every "
        "morning, and on Fridays we also bake a large batch of custard tarts for the market. "
        "Customers can order birthday cakes two days in advance by phone or on our website.",
        "Write a Python function is_even(n) that returns True when n is even.",
        problem,
    ]
    print(f"thread {thread}; the last question is {source}")
    for text in turns:
        r = graph.invoke(text, thread_id=thread)
        print(f"\nuser> {text}")
        print(f"  route={r.route} status={r.status}")
        if r.answer is not None:
            print("  assistant> " + r.answer.replace("\n", "\n             "))
        if r.escalation_reason:
            print(f"  escalated because: {r.escalation_reason} ({r.escalation_detail})")
        if r.status == "escalation_needed":
            print(f"  {r.message}")
        print(f"  ledger: {r.totals.calls} calls, {r.totals.prompt_tokens}+{r.totals.completion_tokens} tokens, "
              f"${r.totals.cost_usd:.6f} (all-large would be ${r.totals.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
