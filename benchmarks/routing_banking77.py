"""Routing on Banking77 with out-of-scope intents: slmgraph against semantic-router and plain LR.

Data: Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0), ``../shared/datasets/banking77``
from the repository root. Per seed, 10 intents are held out as out-of-scope (OOS) for
the test, 10 more are used only as the "no route" examples of the fitting set, and the
remaining 57 are the routes. Everything that is fitted or tuned uses the train split:

- the **bank** (the routes' examples: semantic-router's utterances, the head's training
  data): ``--per-label`` train messages per route (setup ``few``, 12 by default) or
  every train message of the route not in the fitting set (setup ``full``);
- the **fitting set** (the validation split carved from train): ``--fit-per-label``
  other train messages per route and ``--fit-oos-per-label`` per fitting-only OOS intent.

The test is a seeded sample of the *test* split over the 57 routes and the 10 held-out
intents; it is used for the figures only.

Routers, all on the same vectors (slmgraph's default encoder; semantic-router gets
them through a ``DenseEncoder`` over the same cache):

- **slmgraph EmbeddingRouter (head, fitted)**: the calibrated head and retrieval
  similarity, its out-of-scope rule fitted on the fitting set (objective: in-scope
  accuracy + OOS F1);
- **slmgraph EmbeddingRouter (head, leave-one-out)**: the same head, its rule set
  leave-one-out on the bank alone (no OOS examples);
- **slmgraph EmbeddingRouter (retrieval, fitted)**: the earlier scorings (centroid,
  nearest, top-3 with a margin), fitted on the fitting set for accuracy;
- **plain LR**: softmax regression on the same vectors (same solver, no calibration,
  no similarity), its max-probability threshold fitted on the fitting set with the
  same objective as the head's rule;
- **semantic-router**: ``IndexedRouter`` (top_k 5, mean aggregation), ``fit`` (Platt
  calibration, as its docs advise) on the fitting set, then the ``confidence_threshold``
  with the best ``evaluate`` accuracy on the fitting set.

Latency: *decision* is the router's work once the request's vector is known (encoder
not counted), timed on every test request; *end to end* adds encoding the request
afresh, on ``--latency-sample`` requests, the routers taking turns on each request.
Peak memory is the process's maximum RSS.

    .venv/bin/python benchmarks/routing_banking77.py --sr-path /tmp/sr-pkgs [--setup few|full|both] [--seeds 0,1,2,3,4]
    .venv/bin/python benchmarks/routing_banking77.py --dev 10 --no-sr     # tuning: the "test" carved from train
    .venv/bin/python benchmarks/routing_banking77.py --decision-speed     # 150 labels, 15,000 examples

The head routers get each request's text as well as its vector (the head's lexical
term); plain LR stays softmax regression on the vectors alone with a fixed L2 of 0.01.

semantic-router is not a dependency of slmgraph (it pins ``openai<3``); install it
aside: ``pip install --target /tmp/sr-pkgs semantic-router`` and pass ``--sr-path``.
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

import numpy as np

from slmgraph.agents import EmbeddingRouter
from slmgraph.models import EmbeddingCache, default_embedder
from slmgraph.skills import LinearHead
from slmgraph.skills._lexical import LexicalModel
from slmgraph.skills._oos import fit_rule

_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the repository (a worktree one level deeper looks one level up again)
DATA = next((p for p in (_ROOT.parent / "shared" / "datasets" / "banking77",
                         _ROOT.parent.parent / "shared" / "datasets" / "banking77") if p.exists()),
            _ROOT.parent / "shared" / "datasets" / "banking77")


def rows(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


class SharedVectors:
    """One vector per text for every router (from the on-disk cache); texts in
    ``fresh`` are embedded anew on every call (the end-to-end latency sample)."""

    def __init__(self, embedder: Any, vectors: dict[str, Any]) -> None:
        self.embedder, self.name, self.vectors = embedder, embedder.name, vectors
        self.identity = f"benchmark-shared:{embedder.name}"
        self.cacheable = False
        self.fresh: set[str] = set()

    def sync(self, texts: list[Any]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def _one(self, t: str) -> Any:
        if t in self.fresh or t not in self.vectors:
            return np.asarray(self.embedder.embed_sync([t])[0], dtype=np.float32)
        return self.vectors[t]

    async def embed(self, texts: list[str]) -> list[Any]:
        return self.sync(list(texts))


def metrics(picks: list[str | None], gold: list[str], oos: set[str]) -> dict[str, float]:
    inscope = [i for i, g in enumerate(gold) if g not in oos]
    acc = sum(picks[i] == gold[i] for i in inscope) / len(inscope)
    tp = sum(p is None and g in oos for p, g in zip(picks, gold))
    said, n_oos = sum(p is None for p in picks), sum(g in oos for g in gold)
    prec, rec = (tp / said if said else 0.0), tp / n_oos
    return {"inscope_acc": acc, "oos_precision": prec, "oos_recall": rec,
            "oos_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def ms(secs: list[float], q: float) -> float:
    return 1000 * float(np.quantile(secs, q)) if secs else float("nan")


def split(seed: int, setup: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(seed)
    categories = json.loads((DATA / "categories.json").read_text())
    shuffled = rng.sample(categories, len(categories))
    oos, fit_oos, routes = set(shuffled[:10]), set(shuffled[10:20]), sorted(shuffled[20:])
    train = rows("train")
    rng.shuffle(train)
    bank, fit, dev, used = [], [], [], {lb: 0 for lb in categories}
    held = {lb: 0 for lb in categories}
    for text, label in train:
        if args.dev and (label in routes or label in oos) and held[label] < args.dev:
            dev.append((text, label))  # --dev: the "test" is carved from train too (for tuning)
            held[label] += 1
            continue
        if label in routes and used[label] < args.fit_per_label:
            fit.append((text, label))
        elif label in routes and (setup == "full" or used[label] < args.fit_per_label + args.per_label):
            bank.append((text, label))
        elif label in fit_oos and used[label] < args.fit_oos_per_label:
            fit.append((text, None))
        used[label] += 1
    pool = dev or [(t, c) for t, c in rows("test") if c in oos or c in set(routes)]
    test = rng.sample(pool, min(args.test, len(pool)))
    return {"oos": oos, "routes": routes, "bank": bank, "fit": fit, "test": test}


def semantic_router(args: argparse.Namespace, vectors: SharedVectors, bank, fit) -> Any:
    if args.sr_path:
        sys.path.append(args.sr_path)
    try:
        from semantic_router import IndexedRouter, Route
        from semantic_router.encoders import DenseEncoder
    except ImportError:
        sys.exit("semantic-router is not installed: pip install --target /tmp/sr-pkgs semantic-router, "
                 "then pass --sr-path /tmp/sr-pkgs (see the module docstring)")

    class SlmgraphEncoder(DenseEncoder):
        """semantic-router's encoder seam over the shared vectors: identical vectors."""

        name: str = vectors.name

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            return [list(map(float, v)) for v in vectors.sync(list(docs))]

    by_label: dict[str, list[str]] = {}
    for text, label in bank:
        by_label.setdefault(label, []).append(text)
    router = IndexedRouter(encoder=SlmgraphEncoder(), routes=[Route(name=lb, utterances=u) for lb, u in by_label.items()])
    router.fit([x for x, _ in fit], [y for _, y in fit])
    scored = asyncio.run(router._scores_many([x for x, _ in fit]))
    choices = [router._choose(sc, 1, 0.0) for sc in scored]
    conf, tops, gold = [c.confidence for c in choices], [c.name for c in choices], [y for _, y in fit]
    cands = sorted(set(conf)) + [max(conf) + 1e-6]
    router.confidence_threshold = max(cands, key=lambda t: (sum((n if c >= t else None) == g for c, n, g in zip(conf, tops, gold)), -t))
    return router


def run_seed(seed: int, setup: str, args: argparse.Namespace, embedder: Any, store: EmbeddingCache) -> list[dict[str, Any]]:
    s = split(seed, setup, args)
    bank, fit, test, oos, routes = s["bank"], s["fit"], s["test"], s["oos"], s["routes"]
    texts, gold = [x for x, _ in test], [c for _, c in test]
    alltexts = list(dict.fromkeys([x for x, _ in bank] + [x for x, _ in fit] + texts))
    matrix = asyncio.run(store.embed(embedder, alltexts, label="embedding Banking77"))
    vectors = SharedVectors(embedder, dict(zip(alltexts, matrix)))
    qv = np.stack([vectors.vectors[t] for t in texts])
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    fit_x, fit_y = [x for x, _ in fit], [y for _, y in fit]
    out: list[dict[str, Any]] = []
    e2e: dict[str, Any] = {}

    def record(name: str, picks: list, decide_secs: list[float], fit_secs: float) -> None:
        row = {"setup": setup, "seed": seed, "router": name, **metrics(picks, gold, oos),
               "decide_p50_ms": ms(decide_secs, 0.5), "decide_p95_ms": ms(decide_secs, 0.95), "fit_s": fit_secs}
        out.append(row)

    def timed(decide: Any, vecs: Any) -> tuple[list, list[float]]:
        picks, secs = [], []
        for v in vecs:
            t = time.perf_counter()
            picks.append(decide(v))
            secs.append(time.perf_counter() - t)
        return picks, secs

    shared = None
    for name, fitted in (("slmgraph EmbeddingRouter (head, fitted)", True), ("slmgraph EmbeddingRouter (head, leave-one-out)", False)):
        t = time.perf_counter()
        router = EmbeddingRouter(bank, vectors, seed=seed, bank=shared)
        asyncio.run(router.prepare())
        shared = router.bank  # the second router shares the bank and head: only the rule differs
        if fitted:
            asyncio.run(router.fit(fit_x, fit_y))
        fit_s = time.perf_counter() - t
        picks, secs = timed(lambda v: router.decide(*v).label, list(zip(qv, texts)))
        record(name, picks, secs, fit_s)
        e2e[name] = router.choose

    t = time.perf_counter()
    legacy = EmbeddingRouter(bank, vectors, scoring="centroid", cache=False)
    asyncio.run(legacy.fit(fit_x, fit_y))
    picks, secs = timed(lambda v: legacy.decide(v).label, qv)
    record("slmgraph EmbeddingRouter (retrieval scorings, fitted)", picks, secs, time.perf_counter() - t)
    out[-1]["scoring"] = legacy.scoring
    e2e[out[-1]["router"]] = legacy.choose

    t = time.perf_counter()
    codes = {lb: i for i, lb in enumerate(routes)}
    bx = np.stack([vectors.vectors[x] for x, _ in bank])
    # plain LR on the e5 vectors alone, as in earlier runs: fixed L2, no lexical term, no calibration
    lr = LinearHead(l2=1e-2, folds=0, lexical=False, seed=seed).fit(bx, [codes[y] for _, y in bank], len(routes))
    fp = lr.proba(np.stack([vectors.vectors[x] for x in fit_x]))
    rule = fit_rule(fp.max(axis=1), [0.0] * len(fit_x), [routes[k] for k in fp.argmax(axis=1)], fit_y)

    def lr_decide(v: Any) -> str | None:  # similarity 0: the rule is a bar on the max probability alone
        p = lr.proba(v[None, :])[0]
        k = int(p.argmax())
        return routes[k] if rule.in_scope(float(p[k]), 0.0) else None

    picks, secs = timed(lr_decide, qv)
    record("plain LR (max-probability threshold, fitted)", picks, secs, time.perf_counter() - t)

    async def lr_e2e(text: str) -> Any:
        return lr_decide(np.asarray((await vectors.embed([text]))[0]))

    e2e[out[-1]["router"]] = lr_e2e

    if not args.no_sr:
        t = time.perf_counter()
        sr = semantic_router(args, vectors, bank, fit)
        fit_s = time.perf_counter() - t
        th = sr.confidence_threshold
        picks, secs = [], []
        for text in texts:  # the vector is cached: this is the decision alone
            t = time.perf_counter()
            top = sr(text, threshold=0.0)
            secs.append(time.perf_counter() - t)
            picks.append(top.name if top.confidence >= th else None)
        record("semantic-router (fitted)", picks, secs, fit_s)

        async def sr_e2e(text: str) -> Any:
            return sr(text, threshold=0.0)

        e2e[out[-1]["router"]] = sr_e2e

    sample = sorted(random.Random(seed + 1).sample(texts, min(args.latency_sample, len(texts))))
    vectors.fresh = set(sample)
    secs: dict[str, list[float]] = {name: [] for name in e2e}
    names = list(e2e)
    for i, text in enumerate(sample):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            asyncio.run(e2e[name](text))
            secs[name].append(time.perf_counter() - t)
    vectors.fresh = set()
    for row in out:
        row["e2e_p50_ms"], row["e2e_p95_ms"] = ms(secs[row["router"]], 0.5), ms(secs[row["router"]], 0.95)
    print(f"  setup {setup}, seed {seed}: {len(routes)} routes, bank {len(bank)}, fitting set {len(fit)} "
          f"({sum(y is None for y in fit_y)} no-route), test {len(test)} ({sum(g in oos for g in gold)} OOS)", flush=True)
    return out


def decision_speed(args: argparse.Namespace) -> None:
    """Decision latency with 150 labels and 15,000 examples (the encoder not counted),
    and the head's fit time; beside them the pre-head ``EmbeddingRouter`` scoring loop
    (a boolean mask and a centroid per label per request), re-run here as the baseline.
    The vectors are synthetic; the texts are Banking77's (train texts for the examples,
    test texts for the requests), so the head's lexical term does its real work."""
    rng = np.random.default_rng(0)
    n_labels, per = 150, 100
    centers = rng.normal(size=(n_labels, 384))
    y = np.repeat(np.arange(n_labels), per)
    X = centers[y] + rng.normal(scale=2.5, size=(len(y), 384))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    # label c's texts are Banking77's intent c % 77 (train for examples, test for requests)
    intents = sorted({c for _, c in rows("train")})
    by_intent = {c: [t for t, k in rows("train") if k == c] for c in intents}
    test_by_intent = {c: [t for t, k in rows("test") if k == c] for c in intents}
    texts = [f"{by_intent[intents[c % 77]][i % len(by_intent[intents[c % 77]])]} ({i})" for i, c in enumerate(y)]
    table = dict(zip(texts, X))

    class Table:
        name = identity = "synthetic-384"
        cacheable = False

        async def embed(self, batch: list[str]) -> Any:
            return np.stack([table[t] for t in batch])

    examples = [(t, f"label_{c}") for t, c in zip(texts, y)]
    query_labels = rng.integers(0, n_labels, 300)
    queries = centers[query_labels] + rng.normal(scale=2.5, size=(300, 384))
    request_texts = [test_by_intent[intents[c % 77]][i % 40] for i, c in enumerate(query_labels)]
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    print(f"decision latency, {n_labels} labels, {len(y)} examples, 384-d, {len(queries)} requests (encoder not counted)\n")
    print("| scoring | p50 | p95 | fit (wall / CPU) |\n|---|---|---|---|")
    p50s: dict[str, float] = {}
    head_router = None
    for scoring in ("head", "head, lexical term forced on", "centroid", "nearest", "top3", "pre-head loop (centroid)"):
        t, c = time.perf_counter(), time.process_time()
        if scoring.startswith("head,"):  # the synthetic vectors separate the labels: the fitted weight is 0
            router = head_router
            head = router.bank.head
            head.lex = LexicalModel().fit(router.bank.texts, router.bank.codes, n_labels)
            head.lex_weight, head.temperature = 1.0, head.vector_temperature
        else:
            router = EmbeddingRouter(examples, Table(), scoring="centroid" if scoring.startswith("pre") else scoring,
                                     cache=False)
            asyncio.run(router.prepare())
        fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
        head_router = head_router or router
        if scoring.startswith("pre"):
            bank, of = router.bank._matrix, router.bank.codes

            def decide(q: Any) -> Any:  # the loop EmbeddingRouter ran before the head
                sims = q[None, :] @ bank.T
                out = np.empty((1, n_labels), dtype=np.float32)
                for j in range(n_labels):
                    cols = sims[:, of == j]
                    centroid = bank[of == j].mean(axis=0)
                    out[:, j] = q[None, :] @ (centroid / max(float(np.linalg.norm(centroid)), 1e-12))
                return out.argmax()
        else:
            decide = router.decide
        secs = []
        for q, text in zip(queries, request_texts):
            t = time.perf_counter()
            decide(q, text) if scoring.startswith("head") else decide(q)
            secs.append(time.perf_counter() - t)
        p50 = ms(secs, 0.5)
        p50s[scoring] = p50
        print(f"| {scoring} | {p50:.3f} ms | {ms(secs, 0.95):.3f} ms | {fit_s:.1f} / {fit_cpu:.1f} s |", flush=True)
        if scoring == "head":
            print(f"<!-- {router.bank.head!r} -->", flush=True)
    print(f"\nhead / pre-head loop: p50 ratio {p50s['head'] / p50s['pre-head loop (centroid)']:.4f}")
    print(f"(the head's fit includes one held-out fold for calibration and the lexical weight: "
          f"2 fits on {len(y)} examples)")
    print(f"peak memory (maxrss) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def report(allrows: list[dict[str, Any]], setups: list[str]) -> None:
    cols = ["inscope_acc", "oos_precision", "oos_recall", "oos_f1"]
    for setup in setups:
        rs = [r for r in allrows if r["setup"] == setup]
        names = list(dict.fromkeys(r["router"] for r in rs))
        seeds = sorted({r["seed"] for r in rs})
        print(f"\n### setup {setup}: per seed (in-scope accuracy / OOS F1)\n")
        print("| router | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        print("|---|" + "---|" * len(seeds))
        for n in names:
            cells = [next((r for r in rs if r["router"] == n and r["seed"] == s), None) for s in seeds]
            print(f"| {n} | " + " | ".join("n/a" if c is None else f"{c['inscope_acc']:.3f} / {c['oos_f1']:.3f}"
                                           for c in cells) + " |")
        print(f"\n### setup {setup}: mean over seeds {','.join(map(str, seeds))}\n")
        print("| router | in-scope acc | OOS precision | OOS recall | OOS F1 | decision p50 / p95 | end to end p50 / p95 | fit |")
        print("|---|---|---|---|---|---|---|---|")
        for n in names:
            sel = [r for r in rs if r["router"] == n]
            m = {c: statistics.mean(r[c] for r in sel) for c in cols + ["decide_p50_ms", "decide_p95_ms", "e2e_p50_ms", "e2e_p95_ms", "fit_s"]}
            print(f"| {n} | {m['inscope_acc']:.3f} | {m['oos_precision']:.3f} | {m['oos_recall']:.3f} | {m['oos_f1']:.3f} | "
                  f"{m['decide_p50_ms']:.2f} / {m['decide_p95_ms']:.2f} ms | {m['e2e_p50_ms']:.1f} / {m['e2e_p95_ms']:.1f} ms | {m['fit_s']:.1f} s |")
        ours = [r for r in rs if r["router"] == "slmgraph EmbeddingRouter (head, fitted)"]
        for rival in ("plain LR (max-probability threshold, fitted)", "semantic-router (fitted)"):
            theirs = {r["seed"]: r for r in rs if r["router"] == rival}
            if theirs:
                ahead = sum(o["inscope_acc"] > theirs[o["seed"]]["inscope_acc"] and o["oos_f1"] > theirs[o["seed"]]["oos_f1"] for o in ours)
                print(f"\nhead (fitted) ahead of {rival} on both in-scope accuracy and OOS F1: {ahead} of {len(ours)} seeds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", choices=["few", "full", "both"], default="both")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--test", type=int, default=600, help="test requests per seed (seeded sample of the test split)")
    ap.add_argument("--per-label", type=int, default=12, help="bank examples per route (setup few)")
    ap.add_argument("--fit-per-label", type=int, default=3, help="fitting-set messages per route")
    ap.add_argument("--fit-oos-per-label", type=int, default=8, help="fitting-set messages per fitting-only OOS intent")
    ap.add_argument("--latency-sample", type=int, default=20, help="requests encoded afresh per seed, for end-to-end latency")
    ap.add_argument("--cache", default=".slmgraph/embeddings", help="the embedding cache folder")
    ap.add_argument("--sr-path", help="a --target directory where semantic-router is installed")
    ap.add_argument("--no-sr", action="store_true", help="skip semantic-router")
    ap.add_argument("--json", help="also write every row as JSON here")
    ap.add_argument("--dev", type=int, default=0, metavar="N",
                    help="tuning mode: the test is N train messages per route and per held-out intent, kept "
                         "out of the bank and the fitting set (the test split is not read)")
    ap.add_argument("--decision-speed", action="store_true", help="only the 150-label, 15,000-example latency check")
    ap.add_argument("--report", help="only print the tables of rows saved earlier with --json")
    args = ap.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        return report(saved, [s for s in ("few", "full") if any(r["setup"] == s for r in saved)])
    if args.decision_speed:
        return decision_speed(args)

    embedder = default_embedder()
    store = EmbeddingCache(args.cache)
    print("Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0); encoder", embedder.name)
    setups = ["few", "full"] if args.setup == "both" else [args.setup]
    allrows: list[dict[str, Any]] = []
    for setup in setups:
        for seed in [int(x) for x in args.seeds.split(",")]:
            allrows += run_seed(seed, setup, args, embedder, store)
            if args.json:  # written as the seeds finish, so a late failure loses nothing
                Path(args.json).write_text(json.dumps(allrows, indent=2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    report(allrows, setups)
    print(f"\npeak memory (maxrss) {peak:.0f} MiB")


if __name__ == "__main__":
    main()
