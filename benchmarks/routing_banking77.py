"""Routing on Banking77 with out-of-scope intents: slmgraph against semantic-router.

Data: Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0), ``../shared/datasets/banking77``
from the repository root. With a fixed seed, 10 intents are held out as out-of-scope
(OOS) for the test, 10 more are used only as the "no route" examples of the
threshold-fitting set, and the remaining 57 are the routes. Per route, ``--per-label``
train messages form the example bank (semantic-router's utterances) and ``--fit-per-label``
other train messages form the fitting set. The test is a seeded sample of the test
split over the 57 routes and the 10 OOS intents.

Methods, all on the same embeddings (slmgraph's default encoder, multilingual-e5-small;
semantic-router gets it through a custom ``DenseEncoder`` wrapping the same embedder):

- **slmgraph EmbeddingRouter (fitted)**: ``slmgraph.agents.EmbeddingRouter``, its
  scoring (label centroid, nearest example, or mean of the 3 nearest), margin weight
  and threshold chosen by ``fit`` on the fitting set for the best accuracy, None labels included;
- **slmgraph classify (fitted)**: the classify skill in retrieval mode
  (``decisive_margin=0``: the nearest example's label, no small-model call), its
  "none fits" threshold chosen on the fitting set the same way;
- **slmgraph classify (zero-shot)**: the same, threshold calibrated on the bank alone (no OOS examples);
- **semantic-router**: ``IndexedRouter`` (top_k 5, mean aggregation, its defaults), ``fit``
  (Platt calibration, as its docs advise) on the fitting set, then the
  ``confidence_threshold`` with the best ``evaluate`` accuracy on the fitting set;
- each of the two fitted routers again at the *other's* share of escalations (the same
  cost), thresholding its own score at that share;
- **random router** and **zero-router** at the EmbeddingRouter's share of escalations.

Every text is embedded once and shared by all methods (identical vectors) for the
decisions. Latency is measured apart: on ``--latency-sample`` requests every method
embeds the request afresh, the methods taking turns on each request (so the shared
machine's changing load hits all alike); that gives the p50 latency per request,
encoding included.

A request that no route takes escalates to the large model, an oracle (always right)
at ``--cost-per-call``. Columns: in-scope accuracy (the router's own label is right;
an escalated in-scope request counts as wrong), OOS F1 (an escalation is the positive
prediction), APGR and CPT(50%) of the router's score (top similarity / calibrated
confidence, margin score) against the oracle, cost per 1,000 requests, p50 latency per
request (encoding the request included).

    .venv/bin/python benchmarks/routing_banking77.py [--test 400] [--per-label 12] [--seed 7]

semantic-router is not a dependency of slmgraph (it pulls in many provider SDKs and
pins ``openai<3``). Install it beside the venv without touching its packages:
``pip install --target /tmp/sr-pkgs semantic-router``, then pass ``--sr-path /tmp/sr-pkgs``
(appended to ``sys.path``, so the venv's own packages win), or ``pip install semantic-router``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from slmgraph import Accepted, RunContext, run_skill
from slmgraph.agents import EmbeddingRouter
from slmgraph.eval import apgr, cpt, threshold_curve
from slmgraph.models import default_embedder
from slmgraph.models._embed import embed_sync
from slmgraph.skills import classify_skill

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "banking77"


def rows(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def best_threshold(scores: list[float], tops: list[str], gold: list[str | None]) -> float:
    """The threshold with the best accuracy when a score below it means "no route"."""
    cands = sorted(set(scores)) + [max(scores) + 1e-6]
    def acc(t: float) -> float:
        return sum((top if s >= t else None) == g for s, top, g in zip(scores, tops, gold)) / len(gold)
    return max(cands, key=lambda t: (acc(t), -t))


def table_row(name: str, picks: list[str | None], scores: list[float] | None, gold: list[str], oos: set[str],
              latencies: list[float] | None, cost_per_call: float, tops: list[str] | None = None) -> dict[str, Any]:
    """Metrics of one router: ``picks`` is its label or None (escalate) per request."""
    inscope = [i for i, g in enumerate(gold) if g not in oos]
    acc = sum(picks[i] == gold[i] for i in inscope) / len(inscope)
    tp = sum(picks[i] is None and gold[i] in oos for i in range(len(gold)))
    said = sum(p is None for p in picks)
    n_oos = sum(g in oos for g in gold)
    prec, rec = (tp / said if said else 0.0), tp / n_oos
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    share = said / len(gold)
    out = {"router": name, "inscope_acc": acc, "oos_f1": f1, "oos_precision": prec, "oos_recall": rec, "share": share,
           "cost_per_1000": 1000 * share * cost_per_call,
           "p50_ms": 1000 * statistics.median(latencies) if latencies else None, "apgr": None, "cpt50": None}
    if scores is not None and tops is not None:
        small_s = [float(t == g) for t, g in zip(tops, gold)]
        large_s = [1.0] * len(gold)
        curve = threshold_curve(scores, small_s, large_s)
        q_small = sum(small_s) / len(small_s)
        out["apgr"], out["cpt50"] = apgr(curve, q_small, 1.0), cpt(curve, q_small, 1.0, 0.5)
    return out


class SharedVectors:
    """One embedding per text, shared by every method; texts in ``fresh`` are embedded
    anew on every call (the latency sample)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder, self.name = embedder, embedder.name
        self.cache: dict[str, list[float]] = {}
        self.fresh: set[str] = set()

    def fill(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        self.cache.update(zip(todo, embed_sync(self.embedder, todo)))

    def sync(self, texts: list[Any]) -> list[list[float]]:
        missing = [t for t in texts if t in self.fresh or t not in self.cache]
        new = dict(zip(missing, embed_sync(self.embedder, missing))) if missing else {}
        return [new[t] if t in new else self.cache[t] for t in texts]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t in self.fresh or t not in self.cache]
        new = dict(zip(missing, await self.embedder.embed(missing))) if missing else {}
        return [new[t] if t in new else self.cache[t] for t in texts]


async def classify_router(skill: Any, texts: list[str], timed: set[str]) -> tuple[list, list, list, list]:
    """The classify skill per text: (label or None, nearest label, top similarity, seconds of timed texts)."""
    ctx = RunContext(models={})
    picks, tops, scores, secs = [], [], [], []
    for text in texts:
        t = time.perf_counter()
        out = await run_skill(skill, text, ctx, node="benchmark")
        if text in timed:
            secs.append(time.perf_counter() - t)
        if isinstance(out, Accepted):
            picks.append(out.output.label)
            tops.append(out.output.candidates[0].label)
            scores.append(out.output.candidates[0].score)
        else:
            picks.append(None)
            nearest = out.draft["nearest"][0]
            tops.append(nearest["label"])
            scores.append(nearest["score"])
    return picks, tops, scores, secs


async def embedding_router(router: EmbeddingRouter, texts: list[str], timed: set[str]) -> tuple[list, list, list, list]:
    picks, tops, scores, secs = [], [], [], []
    for text in texts:
        t = time.perf_counter()
        c = await router.choose(text)
        if text in timed:
            secs.append(time.perf_counter() - t)
        picks.append(c.label)
        tops.append(c.top)
        scores.append(c.score)
    return picks, tops, scores, secs


def semantic_router_rows(args: argparse.Namespace, vectors: SharedVectors, bank: list[tuple[str, str]],
                         fit: list[tuple[str, str | None]], test: list[tuple[str, str]], timed: set[str]) -> dict[str, Any]:
    if args.sr_path:
        sys.path.append(args.sr_path)
    try:
        import semantic_router
        from semantic_router import IndexedRouter, Route
        from semantic_router.encoders import DenseEncoder
    except ImportError:
        sys.exit("semantic-router is not installed: pip install --target /tmp/sr-pkgs semantic-router, "
                 "then pass --sr-path /tmp/sr-pkgs (see the module docstring)")

    class SlmgraphEncoder(DenseEncoder):
        """semantic-router's encoder seam over slmgraph's embedder: identical vectors."""

        name: str = vectors.name

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            return vectors.sync(list(docs))

    by_label: dict[str, list[str]] = {}
    for text, label in bank:
        by_label.setdefault(label, []).append(text)
    t = time.perf_counter()
    router = IndexedRouter(encoder=SlmgraphEncoder(), routes=[Route(name=lb, utterances=u) for lb, u in by_label.items()])
    report = router.fit([x for x, _ in fit], [y for _, y in fit])  # Platt calibration, as the docs advise
    # the confidence_threshold with the best `evaluate` accuracy on the fitting set: the
    # same objective as router.evaluate, scoring the queries once instead of per threshold
    scored = asyncio.run(router._scores_many([x for x, _ in fit]))
    choices = [router._choose(sc, 1, 0.0) for sc in scored]
    th = best_threshold([c.confidence for c in choices], [c.name for c in choices], [y for _, y in fit])
    router.confidence_threshold = th
    check = router.evaluate([x for x, _ in fit], [y for _, y in fit])
    print(f"semantic-router {semantic_router.__version__}: routes indexed and fitted in {time.perf_counter() - t:.1f}s "
          f"(fit accuracy before threshold {report.accuracy:.3f}); confidence_threshold {th:.3f}, "
          f"evaluate() on the fitting set {check:.3f}")
    picks, tops, scores = [], [], []
    for text, _ in test:
        top = router(text, threshold=0.0)  # the top route and its calibrated confidence
        tops.append(top.name)
        scores.append(top.confidence)
        picks.append(top.name if top.confidence >= th else None)
    return {"picks": picks, "tops": tops, "scores": scores, "router": router}


async def paired_latency(methods: dict[str, Any], texts: list[str]) -> dict[str, list[float]]:
    """Seconds per request for each method, the methods taking turns on every request
    (rotating who goes first), so a change in the shared machine's load hits all alike."""
    secs: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for i, text in enumerate(texts):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            await methods[name](text)
            secs[name].append(time.perf_counter() - t)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test", type=int, default=400, help="test requests (seeded sample)")
    ap.add_argument("--per-label", type=int, default=12, help="bank examples per route")
    ap.add_argument("--fit-per-label", type=int, default=3, help="fitting-set messages per route")
    ap.add_argument("--fit-oos-per-label", type=int, default=8, help="fitting-set messages per fitting-only OOS intent")
    ap.add_argument("--latency-sample", type=int, default=50, help="requests each method embeds afresh, for latency")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cost-per-call", type=float, default=0.001, help="USD per oracle (large model) call")
    ap.add_argument("--sr-path", help="a --target directory where semantic-router is installed")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    categories = json.loads((DATA / "categories.json").read_text())
    shuffled = rng.sample(categories, len(categories))
    oos, fit_oos, routes = set(shuffled[:10]), set(shuffled[10:20]), sorted(shuffled[20:])
    train = rows("train")
    rng.shuffle(train)
    bank, fit, used = [], [], {lb: 0 for lb in categories}
    for text, label in train:
        if label in routes and used[label] < args.per_label:
            bank.append((text, label))
        elif label in routes and used[label] < args.per_label + args.fit_per_label:
            fit.append((text, label))
        elif label in fit_oos and used[label] < args.fit_oos_per_label:
            fit.append((text, None))
        used[label] += 1
    test_pool = [(t, c) for t, c in rows("test") if c in oos or c in set(routes)]
    test = rng.sample(test_pool, min(args.test, len(test_pool)))
    texts, gold = [x for x, _ in test], [c for _, c in test]
    timed = set(random.Random(args.seed + 1).sample(texts, min(args.latency_sample, len(texts))))
    print("Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0)")
    print(f"sizes: {len(routes)} routes, bank {len(bank)}, fitting set {len(fit)} "
          f"({sum(y is None for _, y in fit)} no-route from 10 fitting-only intents), "
          f"test {len(test)} ({sum(c in oos for c in gold)} out-of-scope from 10 held-out intents), "
          f"latency sample {len(timed)}; seed {args.seed}")

    vectors = SharedVectors(default_embedder())
    t = time.perf_counter()
    vectors.fill([x for x, _ in bank] + [x for x, _ in fit] + texts)
    print(f"encoder {vectors.name}: {len(vectors.cache)} texts embedded once in {time.perf_counter() - t:.1f}s")

    out = []
    er = EmbeddingRouter(bank, vectors)
    fit_acc = asyncio.run(er.fit([x for x, _ in fit], [y for _, y in fit]))
    print(f"slmgraph EmbeddingRouter fitted: {er!r}, fitting-set accuracy {fit_acc:.3f}")
    picks, tops, scores, _ = asyncio.run(embedding_router(er, texts, set()))
    results = {"slmgraph EmbeddingRouter (fitted)": (picks, tops, scores)}

    zero_shot = classify_skill(routes, bank, embedder=vectors, decisive_margin=0.0, propose_with_model=False)
    _, ftops, fscores, _ = asyncio.run(classify_router(zero_shot, [x for x, _ in fit], set()))
    th = best_threshold(fscores, ftops, [y for _, y in fit])
    fitted = classify_skill(routes, bank, embedder=vectors, decisive_margin=0.0, propose_with_model=False, none_threshold=th)
    print(f"slmgraph classify fitted none-fits threshold {th:.3f}")
    for name, skill in (("slmgraph classify (fitted)", fitted), ("slmgraph classify (zero-shot)", zero_shot)):
        picks, tops, scores, _ = asyncio.run(classify_router(skill, texts, set()))
        results[name] = (picks, tops, scores)
    sr = semantic_router_rows(args, vectors, bank, fit, test, timed)
    results["semantic-router (fitted)"] = (sr["picks"], sr["tops"], sr["scores"])

    # latency: each method embeds the sampled requests afresh, taking turns per request
    ctx = RunContext(models={})

    async def sr_call(text: str) -> Any:
        return sr["router"](text, threshold=0.0)

    calls = {
        "slmgraph EmbeddingRouter (fitted)": er.choose,
        "slmgraph classify (fitted)": lambda text: run_skill(fitted, text, ctx, node="benchmark"),
        "slmgraph classify (zero-shot)": lambda text: run_skill(zero_shot, text, ctx, node="benchmark"),
        "semantic-router (fitted)": sr_call,
    }
    vectors.fresh = timed
    latency = asyncio.run(paired_latency(calls, sorted(timed)))
    vectors.fresh = set()
    for name, (picks, tops, scores) in results.items():
        out.append(table_row(name, picks, scores, gold, oos, latency[name], args.cost_per_call, tops))
    base, er_scores = (results["slmgraph EmbeddingRouter (fitted)"][0], results["slmgraph EmbeddingRouter (fitted)"][1],
                       latency["slmgraph EmbeddingRouter (fitted)"]), results["slmgraph EmbeddingRouter (fitted)"][2]
    sr["secs"] = latency["semantic-router (fitted)"]

    # each router at the other's share of escalations: the same cost, compared on its own ranking
    def at_share(name: str, tops: list[str], scores: list[float], share: float, secs: list[float]) -> dict[str, Any]:
        k = round(share * len(tops))
        cut = set(sorted(range(len(tops)), key=lambda i: scores[i])[:k])
        picks = [None if i in cut else tops[i] for i in range(len(tops))]
        return table_row(name, picks, scores, gold, oos, secs, args.cost_per_call, tops)

    er_share, sr_share = out[0]["share"], out[3]["share"]
    out.insert(1, at_share(f"slmgraph EmbeddingRouter at semantic-router's share ({sr_share:.0%})", base[1], er_scores, sr_share, base[2]))
    out.insert(5, at_share(f"semantic-router at EmbeddingRouter's share ({er_share:.0%})", sr["tops"], sr["scores"], er_share, sr["secs"]))

    picks, tops, secs = base
    share = sum(p is None for p in picks) / len(picks)
    chosen = set(random.Random(args.seed).sample(range(len(test)), round(share * len(test))))
    out.append(table_row("random router", [None if i in chosen else tops[i] for i in range(len(test))],
                         None, gold, oos, None, args.cost_per_call))
    out[-1].update(apgr=0.5, cpt50=0.5)  # in expectation; see slmgraph.eval.random_router_curve
    # zero-router: a fixed mixture at the same share; its expected in-scope accuracy and OOS F1
    inscope = [i for i, g in enumerate(gold) if g not in oos]
    zacc = (1 - share) * sum(tops[i] == gold[i] for i in inscope) / len(inscope)
    zprec, zrec = (len(gold) - len(inscope)) / len(gold), share
    out.append({"router": "zero-router", "inscope_acc": zacc, "oos_f1": 2 * zprec * zrec / (zprec + zrec) if share else 0.0,
                "share": share, "cost_per_1000": 1000 * share * args.cost_per_call, "p50_ms": None, "apgr": 0.5, "cpt50": 0.5})

    def f(x: float | None, spec: str = ".3f") -> str:
        return "n/a" if x is None else format(x, spec)

    print()
    print("| router | in-scope accuracy | OOS F1 | APGR | CPT(50%) | cost / 1k requests | p50 latency |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        lat = f"{r['p50_ms']:.1f} ms" if r["p50_ms"] is not None else "n/a"
        print(f"| {r['router']} | {f(r['inscope_acc'])} | {f(r['oos_f1'])} | {f(r['apgr'])} | {f(r['cpt50'])} | "
              f"${r['cost_per_1000']:.2f} | {lat} |")
    ours, theirs = out[0], out[4]
    print(f"\nslmgraph EmbeddingRouter / semantic-router: p50 latency ratio {ours['p50_ms'] / theirs['p50_ms']:.2f}; "
          f"in-scope accuracy {ours['inscope_acc'] - theirs['inscope_acc']:+.3f}, OOS F1 {ours['oos_f1'] - theirs['oos_f1']:+.3f}")
    print(f"peak memory (maxrss) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
