"""What the default confidence bar (``DEFAULT_MIN_CONFIDENCE``) sees on the embedded model.

Runs a refund-extraction skill on SmolLM2-135M (in-process, with logprobs) over a few
requests and prints each reply, whether it is right, and its confidence (the
geometric-mean token probability the acceptance policy uses), then how many the
default bar would accept.

    .venv/bin/python benchmarks/confidence_default.py
"""

from __future__ import annotations

import asyncio
import resource
import time

from pydantic import BaseModel

from slmgraph import AcceptancePolicy, LlamaCppModel, ModelSettings, Skill
from slmgraph.skills import DEFAULT_MIN_CONFIDENCE
from slmgraph.skills._run import skill_messages


class Refund(BaseModel):
    amount: float
    currency: str
    reason: str


SKILL = Skill(
    name="refund", description="extract a refund", output_type=Refund, acceptance=AcceptancePolicy(min_confidence=None),
    instructions="Extract the refund amount, its currency code and the reason.",
)
#: request, expected amount, expected currency
CASES = [
    ("42.50 EUR, damaged", 42.5, "EUR"),
    ("Please refund 19.99 USD, the item never arrived", 19.99, "USD"),
    ("I want my 7 GBP back, wrong size", 7.0, "GBP"),
    ("refund 120 EUR: broken screen", 120.0, "EUR"),
    ("100 dollars back please, it was late", 100.0, "USD"),
    ("Charge of 15.00 CHF was a mistake", 15.0, "CHF"),
    ("return 8.75 EUR because it is the wrong colour", 8.75, "EUR"),
    ("I paid 64 USD twice", 64.0, "USD"),
]


async def main() -> None:
    model = LlamaCppModel(logprobs=True)
    settings = ModelSettings(temperature=0.0, logprobs=True, top_logprobs=1, max_tokens=80)
    rows = []
    for request, amount, currency in CASES:
        started = time.perf_counter()
        reply = await model.complete(skill_messages(SKILL, SKILL.parse_input(request)), schema=SKILL.output_schema(),
                                     settings=settings)  # fmt: skip
        out = SKILL.parse_output(reply.value(), reply.text)
        right = abs(out.amount - amount) < 1e-6 and out.currency == currency
        conf = reply.confidence() or 0.0
        rows.append((right, conf))
        print(f"{'right' if right else 'WRONG'}  confidence {conf:.2f}  {time.perf_counter() - started:5.1f} s  "
              f"{request!r} -> {out.amount} {out.currency}")  # fmt: skip
    accepted = [r for r in rows if r[1] >= DEFAULT_MIN_CONFIDENCE]
    print(f"\n{len(rows)} replies, {sum(r for r, _ in rows)} right; confidence "
          f"{min(c for _, c in rows):.2f}-{max(c for _, c in rows):.2f}")
    print(f"default bar {DEFAULT_MIN_CONFIDENCE}: accepts {len(accepted)} ({sum(r for r, _ in accepted)} right), "
          f"escalates {len(rows) - len(accepted)}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
