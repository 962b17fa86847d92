"""The learning loop on a stream of Banking77 requests, against the same stream with learning off.

Part 1 (``--part stream``): a help desk that knows a few intents from a small
bank answers a time-ordered stream of Banking77 *training* requests (Casanueva et
al. 2020, PolyAI, CC BY 4.0). slmgraph.eval's ``OracleModel`` plays the large
model (it answers the gold intent, at $0.001 a call). With learning on, every
escalation is captured and a learning cycle (curate -> memory strategy -> shadow
evaluation -> promote) runs every ``--every`` requests; 5 % of accepted answers
are spot-checked. The small tier is the classify skill with a stand-in chooser
that takes the best candidate (``first_candidate_model``: the skill then
answers with its trained head's / retrieval's top label, instantly and
deterministically; a real small model adds its own errors and latency). Prints the escalation rate per window,
quality with a paired bootstrap CI, cost, labels adopted and promotions.

Part 2 (``--part lora``): LoRA on the sentiment skill. The data are generated
templated reviews kept in ``benchmarks/data/sentiment_reviews.jsonl``; prints
held-out accuracy of SmolLM2-135M with and without the adapter (both through
the embedded engine and the skill's schema), training time and peak memory.

    .venv/bin/python benchmarks/learning_loop.py                       # both parts
    .venv/bin/python benchmarks/learning_loop.py --part stream --embedder hashing   # quick
    .venv/bin/python benchmarks/learning_loop.py --part stream --strategies memory,head --seeds 7,11
    .venv/bin/python benchmarks/learning_loop.py --part stream --small smollm2 --n 200 --intents 30 --known 10 \\
        --every 100 --window 50 --audit 0.2      # the real SmolLM2 small tier, on a short stream
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

from slmgraph import EscalationAgent, build_graph
from slmgraph.eval import OracleModel
from slmgraph.learn import Learner, MemoryStrategy, SqliteLearningStore, bootstrap, cached, with_learning
from slmgraph.learn._doubles import first_candidate_model
from slmgraph.learn._report import write_report
from slmgraph.ledger import Price, PriceTable
from slmgraph.models._embed import HashingEmbedder, default_embedder
from slmgraph.skills._classify import classify_skill

HERE = Path(__file__).resolve().parent
_NEAR = [HERE.parent.parent / "shared", HERE.parent.parent.parent / "shared"]  # beside the repo, or beside a worktree
DATA = next((p for p in _NEAR if p.is_dir()), _NEAR[0]) / "datasets" / "banking77" / "train.csv"
COST = 0.001


def load(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def split(rows, *, seed: int, known: int, per_label: int, n: int, intents: int = 0):
    rng = random.Random(seed)
    rows = rows[:]
    rng.shuffle(rows)
    labels = sorted({lb for _, lb in rows})
    if intents:  # a narrower stream: only these intents occur
        labels = sorted(rng.sample(labels, intents))
        rows = [r for r in rows if r[1] in labels]
    known_labels = sorted(rng.sample(labels, known))
    bank, rest, taken = [], [], Counter()
    for text, lb in rows:
        if lb in known_labels and taken[lb] < per_label:
            bank.append((text, lb))
            taken[lb] += 1
        else:
            rest.append((text, lb))
    return known_labels, bank, rest[:n]


def small_model(kind: str):
    if kind == "smollm2":  # the real small tier: SmolLM2-135M-Instruct through the embedded engine
        from slmgraph.models._llamacpp import LlamaCppModel

        return LlamaCppModel()
    return first_candidate_model()


async def graph_for(labels, bank, embedder, oracle, small, args):
    what = {"embedder": embedder, "name": "triage", "description": "sort a customer-support message into one help-desk intent"}
    skill = classify_skill(labels, bank, **what)
    if args.fix_thresholds:  # the builder fixed the bars calibrated on the first bank
        runner = skill.runner
        skill = classify_skill(labels, bank, none_threshold=await runner.threshold(), decisive_margin=await runner.margin(), **what)
    prices = PriceTable(prices={oracle.name: Price(per_call_usd=COST)}, baseline_model=oracle.name)
    return build_graph([skill], models={"small": small, "large": oracle},
                       escalation=EscalationAgent(tools=()), prices=prices, checkpoint=None, name="helpdesk")


def audit_by_request(graph, share: float) -> None:
    """Pick the audited requests by their text, not by the (random) run id, so every
    strategy's stream audits the same requests and the comparison is fair."""
    from slmgraph.graphs._nodes import _get, as_text

    def sampled(state, config) -> bool:
        text = as_text(_get(state, "request") or "")
        return share > 0 and zlib.crc32(text.encode()) % 10_000 < share * 10_000

    graph.spec.capture.sampled = sampled


async def live_step(graph, learner, log) -> tuple[bool, str | None]:
    """Judge the candidate in shadow on its live results, then put the next one there."""
    await graph.shadow.drain()
    promoted, got = False, await learner.store.shadow_of("triage")
    if got is not None:
        rp = await learner.judge_live(got[0])
        promoted = rp.promote
        log(f"    live {rp.n} ({rp.extra['labelled']} with a teacher answer): quality {rp.current.quality[0]:.3f} -> "
            f"{rp.candidate.quality[0]:.3f}, escalation {rp.current.escalation_rate[0]:.3f} -> "
            f"{rp.candidate.escalation_rate[0]:.3f}: {'promoted' if promoted else 'not promoted'}: {rp.why}")
    return promoted, got[0] if got else None


async def replay(graph, stream, *, learner=None, every=0, window=250, log=print, live=0.0):
    outcomes, windows, marks, adopted = [], [], [], []
    win = {"runs": 0, "escalations": 0, "cost_usd": 0.0}
    for i, (text, gold) in enumerate(stream, 1):
        r = await graph.ainvoke(text)
        escalated = r.status != "answered"
        correct = (r.answer == gold) if escalated else (r.output.label == gold)
        outcomes.append((escalated, float(correct), r.totals.cost_usd))
        win["runs"] += 1
        win["escalations"] += escalated
        win["cost_usd"] += r.totals.cost_usd
        if i % window == 0:
            windows.append({"label": f"{i - window + 1}-{i}", **win})
            win = {"runs": 0, "escalations": 0, "cost_usd": 0.0}
        if learner is not None and every and i % every == 0 and live:
            # Live mode: the candidate in shadow is judged on its live results (the
            # only promotion gate), then the next candidate goes into shadow.
            t0 = time.perf_counter()
            promoted, judged = await live_step(graph, learner, log)
            if promoted:
                v = await learner.store.version(judged)
                fresh = [lb for lb in v.payload.get("labels", []) if lb not in adopted]
                adopted += fresh
                marks.append({"index": len(windows), "kind": "promote", "version": judged, "reason": "live shadow"})
                log(f"  after {i}: promoted {judged} on live results ({len(fresh)} labels adopted)")
            try:
                cycle = await learner.cycle("triage", promote=False)
            except Exception as exc:  # e.g. no holdout yet
                log(f"  after {i}: no candidate ({exc})")
                continue
            if cycle.candidate is not None:
                await learner.store.set_shadow("triage", cycle.candidate.id, live, reason="benchmark")
                learner.cache.invalidate("triage")
                log(f"  after {i}: {cycle.candidate.id} in shadow on {live:.0%} ({time.perf_counter() - t0:.1f}s)")
            continue
        if learner is not None and every and i % every == 0:
            t0 = time.perf_counter()
            cycle = await learner.cycle("triage")
            took = time.perf_counter() - t0
            new = cycle.candidate.payload.get("labels", []) if cycle.candidate else []
            if cycle.report is not None:
                rp = cycle.report
                log(f"    holdout {rp.n}: quality {rp.current.quality[0]:.3f} -> {rp.candidate.quality[0]:.3f}, "
                    f"escalation {rp.current.escalation_rate[0]:.3f} -> {rp.candidate.escalation_rate[0]:.3f}, "
                    f"{len(new)} labels in the candidate")
            if cycle.promoted:
                fresh = [lb for lb in new if lb not in adopted]
                adopted += fresh
                marks.append({"index": len(windows), "kind": "promote", "version": cycle.candidate.id, "reason": cycle.note})
                log(f"  after {i}: promoted {cycle.candidate.id} ({len(fresh)} labels adopted, {took:.1f}s): {cycle.note}")
            else:
                log(f"  after {i}: not promoted ({took:.1f}s): {cycle.note}")
    if win["runs"]:
        windows.append({"label": f"{len(stream) - win['runs'] + 1}-{len(stream)}", **win})
    return outcomes, windows, marks, adopted


def figures(outs, base=None):
    """Second-half escalation rate, quality (CI), cost; against ``base`` the paired difference."""
    half = len(outs) // 2
    out = {"escalation": sum(o[0] for o in outs) / len(outs),
           "escalation_2nd": sum(o[0] for o in outs[half:]) / (len(outs) - half),
           "quality": bootstrap([o[1] for o in outs]), "cost": sum(o[2] for o in outs)}
    if base is not None:
        out["diff"] = bootstrap([b[1] - a[1] for a, b in zip(base, outs)])
        out["esc_cut"] = 1 - out["escalation_2nd"] / base_2nd if (base_2nd := figures(base)["escalation_2nd"]) else 0.0
        out["cost_ratio"] = out["cost"] / max(figures(base)["cost"], 1e-12)
    return out


def side_by_side(columns: dict[str, dict]) -> None:
    """One row per figure, one column per run (learning off first)."""
    names = list(columns)
    print(f"{'':<34}" + "".join(f"{n:>26}" for n in names))

    def row(label, fn):
        print(f"{label:<34}" + "".join(f"{fn(columns[n]):>26}" for n in names))

    row("escalation rate, whole stream", lambda f: f"{f['escalation']:.3f}")
    row("escalation rate, second half", lambda f: f"{f['escalation_2nd']:.3f}")
    row("  lower than learning off", lambda f: f"{f['esc_cut']:.1%}" if "esc_cut" in f else "")
    row("quality, 95% CI", lambda f: "{:.3f} [{:.3f}, {:.3f}]".format(*f["quality"]))
    row("quality difference vs off, paired", lambda f: "{:+.3f} [{:+.3f}, {:+.3f}]".format(*f["diff"]) if "diff" in f else "")
    row("total cost", lambda f: f"${f['cost']:.3f}" + (f" ({f['cost_ratio']:.2f}x)" if "cost_ratio" in f else ""))
    row("promotions / labels adopted", lambda f: f"{f.get('promotions', '')} / {f.get('adopted', '')}" if "promotions" in f else "")
    row("wall time", lambda f: f"{f['seconds']:.0f}s")


def strategy_of(name: str, args):
    if name == "head":
        from slmgraph.learn import HeadStrategy

        return HeadStrategy(adopt_after=args.adopt_after)
    return MemoryStrategy(adopt_after=args.adopt_after)


async def run_stream(args, seed: int) -> dict[str, dict]:
    rows = load(Path(args.data))
    labels, bank, stream = split(rows, seed=seed, known=args.known, per_label=args.per_label, n=args.n, intents=args.intents)
    print(f"\n== seed {seed}{' (thresholds fixed on the first bank)' if args.fix_thresholds else ''}: Banking77 train split (CC BY 4.0): {len(stream)} requests, "
          f"{len(set(lb for _, lb in stream))} intents; the help desk starts knowing {len(labels)} intents "
          f"from {len(bank)} examples; small tier: {args.small}")
    embedder = cached(HashingEmbedder() if args.embedder == "hashing" else default_embedder())
    small = small_model(args.small)
    answers = {t: lb for t, lb in stream}
    t0 = time.perf_counter()
    off_graph = await graph_for(labels, bank, embedder, OracleModel(answers, cost_per_call=COST), small, args)
    off, off_windows, _, _ = await replay(off_graph, stream, window=args.window)
    columns = {"learning off": {**figures(off), "seconds": time.perf_counter() - t0}}
    windows = {"learning off": off_windows}
    for name in args.strategies.split(","):
        print(f"-- learning on, strategy {name}")
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteLearningStore(Path(tmp) / "learning.sqlite")
            base = await graph_for(labels, bank, embedder, OracleModel(answers, cost_per_call=COST), small, args)
            graph = with_learning(base, store, audit_sample=args.audit, refresh_s=0.0)
            audit_by_request(graph, args.audit)
            learner = Learner.for_graph(graph, store, strategy=strategy_of(name, args), embedder=embedder,
                                        near=args.near, holdout=0.2, margin=args.margin)
            t1 = time.perf_counter()
            on, on_windows, marks, adopted = await replay(graph, stream, learner=learner, every=args.every, window=args.window,
                                                          live=args.live)
            columns[f"on, {name}"] = {**figures(on, off), "seconds": time.perf_counter() - t1,
                                      "promotions": len(marks), "adopted": len(adopted), "records": await store.count()}
            windows[f"on, {name}"] = on_windows
            await store.close()
        if name == args.strategies.split(",")[0]:
            md, png = write_report(args.out, on_windows, marks, title=f"help desk on Banking77: learning on ({name}) vs off",
                                   baseline=off_windows)
            print(f"report: {md}, {png}")
    print("\nwindow        " + "".join(f"{'esc ' + n:>20}" for n in windows) + "".join(f"{'cost ' + n:>20}" for n in windows))
    for i, w in enumerate(off_windows):
        print(f"{w['label']:<13} " + "".join(f"{ws[i]['escalations'] / ws[i]['runs']:>20.3f}" for ws in windows.values())
              + "".join(f"{'$%.3f' % ws[i]['cost_usd']:>20}" for ws in windows.values()))
    print()
    side_by_side(columns)
    for n, f in columns.items():
        if "records" in f:
            print(f"records at the end ({n}): {f['records']}")
    print(f"embedder {embedder.name}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return columns


async def stream_part(args) -> None:
    runs = {seed: await run_stream(args, seed) for seed in (int(x) for x in str(args.seeds).split(","))}
    if len(runs) > 1:
        print("\n== over seeds " + ", ".join(map(str, runs)))
        for name in next(iter(runs.values())):
            if name == "learning off":
                continue
            cuts = [r[name]["esc_cut"] for r in runs.values()]
            diffs = [r[name]["diff"] for r in runs.values()]
            costs = [r[name]["cost_ratio"] for r in runs.values()]
            print(f"{name:<14} second-half escalation cut " + ", ".join(f"{c:.1%}" for c in cuts)
                  + "; quality diff " + ", ".join("{:+.3f} [{:+.3f}, {:+.3f}]".format(*d) for d in diffs)
                  + "; cost " + ", ".join(f"{c:.2f}x" for c in costs))


# -- part 2: LoRA --------------------------------------------------------------------------
POS = ["love", "great", "excellent", "wonderful", "fantastic", "perfect", "amazing", "brilliant"]
NEG = ["hate", "terrible", "awful", "broken", "useless", "horrible", "disappointing", "worst"]
THINGS = ["phone", "app", "delivery", "support team", "headphones", "laptop", "hotel", "coffee machine", "bank card", "shoes"]
TEMPLATES = {
    "positive": ["I {w} this {t}!", "The {t} is {w}, would buy again.", "Really {w} {t}, very happy.", "{W} {t}, five stars."],
    "negative": ["The {t} is {w}.", "{W} {t}, I want a refund.", "What a {w} {t}, never again.", "My {t} was {w} after a week."],
    "neutral": ["The {t} arrived on Tuesday.", "I bought the {t} last month.", "The {t} comes in black and grey.", "Is the {t} available in store?"],
}


def sentiment_data(path: Path, seed: int = 7, n: int = 120) -> list[dict]:
    if path.is_file():
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["positive", "negative", "neutral"][i % 3]
        w = rng.choice(POS if label == "positive" else NEG)
        text = rng.choice(TEMPLATES[label]).format(w=w, W=w.capitalize(), t=rng.choice(THINGS))
        rows.append({"text": text, "sentiment": label})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


async def lora_part(args) -> None:
    from slmgraph import RunContext, run_skill
    from slmgraph.graphs._blueprints import sentiment_skill
    from slmgraph.learn import LearningRecord, Snapshot
    from slmgraph.learn._lora import LoraSettings, LoraStrategy
    from slmgraph.models._llamacpp import LlamaCppModel
    from slmgraph.skills._skill import Accepted

    rows = sentiment_data(HERE / "data" / "sentiment_reviews.jsonl")
    train, held = rows[: int(len(rows) * 0.75)], rows[int(len(rows) * 0.75) :]
    skill = sentiment_skill().clone(acceptance=sentiment_skill().acceptance.__class__(min_confidence=None))
    recs = [LearningRecord(key=str(i), request=r["text"], skill="sentiment", teacher_valid=True,
                           teacher_output={"sentiment": r["sentiment"]}) for i, r in enumerate(train)]
    snap = Snapshot.build("sentiment", recs, [], {})
    settings = LoraSettings(steps=args.lora_steps, batch_size=4, lr=1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        strategy = LoraStrategy(Path(tmp), settings=settings, progress=True)
        version = await strategy.propose(skill, snap, None)
        p = version.payload
        print(f"LoRA: {len(train)} examples, {settings.steps} steps of {settings.batch_size}, rank {settings.rank}: "
              f"{p['seconds']:.0f}s, peak RSS {p['peak_rss_mib']:.0f} MiB; loss {p['losses'][0]:.3f} -> {p['losses'][-1]:.3f}")

        async def accuracy(model) -> float:
            right = 0
            for r in held:
                out = await run_skill(skill, r["text"], RunContext(models={"small": model}))
                right += isinstance(out, Accepted) and out.output.sentiment == r["sentiment"]
            return right / len(held)

        base = await accuracy(LlamaCppModel())
        tuned = await accuracy(LlamaCppModel(lora_path=p["adapter"]))
        print(f"held-out accuracy on {len(held)} generated reviews: base {base:.3f}, LoRA-tuned {tuned:.3f}")
        print(f"peak RSS of the process (training and both engines): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["stream", "lora", "all"], default="all")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--known", type=int, default=20, help="intents the help desk starts with")
    ap.add_argument("--per-label", type=int, default=5, help="bank examples per known intent")
    ap.add_argument("--every", type=int, default=250, help="requests between learning cycles")
    ap.add_argument("--window", type=int, default=250)
    ap.add_argument("--adopt-after", type=int, default=3)
    ap.add_argument("--audit", type=float, default=0.05)
    ap.add_argument("--near", type=float, default=0.97)
    ap.add_argument("--margin", type=float, default=0.02)
    ap.add_argument("--embedder", choices=["e5", "hashing"], default="e5")
    ap.add_argument("--seeds", default="7", help="comma-separated shuffle seeds, e.g. 7,11")
    ap.add_argument("--strategies", default="memory", help="comma-separated: memory, head (side by side)")
    ap.add_argument("--small", choices=["stand-in", "smollm2"], default="stand-in",
                    help="the small tier: the first-candidate stand-in, or SmolLM2-135M through the embedded engine")
    ap.add_argument("--intents", type=int, default=0, help="only this many intents in the stream (0: all 77)")
    ap.add_argument("--live", type=float, default=0.0, metavar="SHARE",
                    help="promote on live shadow results only: each cycle's candidate runs in shadow on this share "
                         "of the next requests and is judged at the next cycle")
    ap.add_argument("--fix-thresholds", action="store_true",
                    help="fix the skill's 'none fits' bar and decisive lead at their values calibrated on the first bank "
                         "(memory then keeps them; head recalibrates them on each new bank)")
    ap.add_argument("--lora-steps", type=int, default=40)
    ap.add_argument("--out", default=".slmgraph/learning-benchmark")
    args = ap.parse_args()
    if args.part in ("stream", "all"):
        asyncio.run(stream_part(args))
    if args.part in ("lora", "all"):
        asyncio.run(lora_part(args))


if __name__ == "__main__":
    sys.exit(main())
