"""The classify skill on Banking77, with 10 intents held out as "unknown".

The train split is the example bank (by default its first 40 examples per intent,
to keep the run short; ``--bank-per-label 0`` or ``--full`` keeps all); 10 categories (chosen by ``--seed``) are
removed from the bank and the label set, so their test requests should come back
as "none fits". Requests are a uniform sample of the test split (the natural mix
of known and held-out intents); ``--full`` runs the whole split. In the same
process, a head-only baseline (the head's best label, with the same "none fits"
bars and no small model) runs on the same requests.

Prints accuracy on the known intents, precision and recall of "none fits" on the
held-out ones, p50/p95 latency per request, peak memory, and the ratios of the
skill to the baseline.

    .venv/bin/python benchmarks/classify_banking77.py [--n 120] [--bank-per-label 40] [--full] [--top-k 5]

Runs on the configured small model (the embedded SmolLM2-135M by default) and the
default offline encoder. Banking77: Casanueva et al. 2020 (PolyAI), CC BY 4.0.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from slmgraph import Accepted, EscalationReason, RunContext, load_config, models_from_config, run_skill
from slmgraph.models import default_embedder
from slmgraph.skills import classify_skill

_ROOT = Path(__file__).resolve().parents[1]
DATA = next((p for p in (_ROOT.parent / "shared" / "datasets" / "banking77",
                         _ROOT.parent.parent / "shared" / "datasets" / "banking77") if p.exists()),
            _ROOT.parent / "shared" / "datasets" / "banking77")


def rows(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


@dataclass
class Tally:
    """Outcomes of one method over the requests."""

    name: str
    known_right: int = 0
    known: int = 0
    none_true: int = 0  # held-out request answered "none fits"
    none_said: int = 0  # any request answered "none fits"
    heldout: int = 0
    other_rejects: int = 0  # escalated for another reason (invalid output, low confidence)
    latencies: list[float] = field(default_factory=list)

    def add(self, gold_known: bool, gold: str, label: str | None, none: bool, seconds: float) -> None:
        self.latencies.append(seconds)
        self.none_said += none
        if gold_known:
            self.known += 1
            self.known_right += label == gold
        else:
            self.heldout += 1
            self.none_true += none

    @property
    def accuracy(self) -> float:
        return self.known_right / self.known if self.known else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0

    def line(self) -> str:
        precision = self.none_true / self.none_said if self.none_said else 0.0
        recall = self.none_true / self.heldout if self.heldout else 0.0
        return (
            f"{self.name:>14}: known accuracy {self.accuracy:.3f} ({self.known_right}/{self.known}) | "
            f"none-fits precision {precision:.3f} ({self.none_true}/{self.none_said}) "
            f"recall {recall:.3f} ({self.none_true}/{self.heldout}) | "
            f"other escalations {self.other_rejects} | "
            f"latency p50 {self.pct(0.5):.3f}s p95 {self.pct(0.95):.3f}s"
        )


def _margin(value: str) -> float | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else value
    return float(value)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=120, help="test requests (uniform sample of the test split)")
    ap.add_argument("--full", action="store_true", help="run the whole test split")
    ap.add_argument("--bank-per-label", type=int, default=40,
                    help="train examples kept per intent in the bank (0: all; --full keeps all)")
    ap.add_argument("--heldout", type=int, default=10, help="categories held out as unknown")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--none-quantile", type=float, default=0.05)
    ap.add_argument("--decisive-margin", type=_margin, default="auto",
                    help="accept the nearest label without the model when it leads by this much: "
                         "a number, 'auto' (calibrated on the bank; the skill's default) or 'none' (always ask)")
    args = ap.parse_args()

    categories = json.loads((DATA / "categories.json").read_text())
    rng = random.Random(args.seed)
    heldout = set(rng.sample(categories, args.heldout))
    known = [c for c in categories if c not in heldout]
    cap = 0 if args.full else args.bank_per_label
    per: dict[str, int] = {}
    bank = []
    for t, c in rows("train"):
        if c not in heldout and (not cap or per.get(c, 0) < cap):
            per[c] = per.get(c, 0) + 1
            bank.append((t, c))
    test = rows("test")
    requests = test if args.full else rng.sample(test, min(args.n, len(test)))

    config = load_config()
    models = models_from_config(config)
    embedder = default_embedder()
    skill = classify_skill(known, bank, embedder=embedder, top_k=args.top_k,
                           none_quantile=args.none_quantile, decisive_margin=args.decisive_margin)
    print(f"Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0): {len(known)} known intents, "
          f"{len(bank)} bank examples; held out: {', '.join(sorted(heldout))}")
    print(f"small model: {models['small'].name} ({models['small'].provider}); encoder: {embedder.name}")

    t0 = time.perf_counter()
    bank_index = skill.runner.bank
    await bank_index.ready()  # embedded (or read from the cache) and the head fitted
    threshold = await skill.runner.threshold()
    margin = await skill.runner.margin()
    print(f"bank embedded in {time.perf_counter() - t0:.1f}s; none-fits threshold {threshold:.3f} over the bank, "
          f"per label {min(skill.runner.label_thresholds.values(), default=threshold):.3f}-"
          f"{max(skill.runner.label_thresholds.values(), default=threshold):.3f} (quantile {args.none_quantile})")
    print(f"{len(requests)} requests ({sum(c not in heldout for _, c in requests)} known, "
          f"{sum(c in heldout for _, c in requests)} held out), top_k={args.top_k}, "
          f"decisive_margin={args.decisive_margin}"
          + (f" (calibrated: {'none' if margin is None else f'{margin:.3f}'})" if args.decisive_margin == "auto" else ""))

    base, full = Tally("head only (same bars, no model)"), Tally("classify skill")
    calls = agreed = accepted = 0
    for i, (text, gold) in enumerate(requests, 1):
        is_known = gold not in heldout
        t = time.perf_counter()
        best = (await skill.runner.candidates(text))[0]
        label = best.label if (await skill.runner.in_scope(best))[0] else None
        base.add(is_known, gold, label, label is None, time.perf_counter() - t)

        ctx = RunContext(models=models)
        t = time.perf_counter()
        out = await run_skill(skill, text, ctx, node="benchmark")
        seconds = time.perf_counter() - t
        calls += len(ctx.recorder.dump())
        if isinstance(out, Accepted):
            accepted += 1
            agreed += out.output.label == out.output.candidates[0].label
            full.add(is_known, gold, out.output.label, False, seconds)
        else:
            none = out.reason is EscalationReason.NONE_FITS
            full.other_rejects += not none
            full.add(is_known, gold, None, none, seconds)
        if i % 20 == 0:
            print(f"  {i}/{len(requests)} done", flush=True)

    print(base.line())
    print(full.line())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model calls: {calls} ({calls / len(requests):.2f} per request); accepted answers equal to the "
          f"head's best label: {agreed}/{accepted}; peak memory (maxrss) {peak:.0f} MiB")
    acc_ratio = full.accuracy / base.accuracy if base.accuracy else float("nan")
    lat_ratio = statistics.median(full.latencies) / max(statistics.median(base.latencies), 1e-9)
    print(f"skill / head-only: accuracy ratio {acc_ratio:.3f}, p50 latency ratio {lat_ratio:.0f}x")


if __name__ == "__main__":
    asyncio.run(main())
