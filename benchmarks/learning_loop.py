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


def split(rows, *, seed: int, known: int, per_label: int, n: int):
    rng = random.Random(seed)
    rows = rows[:]
    rng.shuffle(rows)
    labels = sorted({lb for _, lb in rows})
    known_labels = sorted(rng.sample(labels, known))
    bank, rest, taken = [], [], Counter()
    for text, lb in rows:
        if lb in known_labels and taken[lb] < per_label:
            bank.append((text, lb))
            taken[lb] += 1
        else:
            rest.append((text, lb))
    return known_labels, bank, rest[:n]


def graph_for(labels, bank, embedder, oracle):
    skill = classify_skill(labels, bank, embedder=embedder, name="triage",
                           description="sort a customer-support message into one help-desk intent")
    prices = PriceTable(prices={oracle.name: Price(per_call_usd=COST)}, baseline_model=oracle.name)
    return build_graph([skill], models={"small": first_candidate_model(), "large": oracle},
                       escalation=EscalationAgent(tools=()), prices=prices, checkpoint=None, name="helpdesk")


async def replay(graph, stream, *, learner=None, every=0, window=250, log=print):
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


def summary(name, outs):
    half = len(outs) // 2
    esc = sum(o[0] for o in outs) / len(outs)
    esc2 = sum(o[0] for o in outs[half:]) / (len(outs) - half)
    q = bootstrap([o[1] for o in outs])
    cost = sum(o[2] for o in outs)
    print(f"{name:<14} escalation {esc:.3f} (second half {esc2:.3f})  quality {q[0]:.3f} [{q[1]:.3f}, {q[2]:.3f}]  cost ${cost:.3f}")
    return esc2, q, cost


async def stream_part(args) -> None:
    rows = load(Path(args.data))
    labels, bank, stream = split(rows, seed=args.seed, known=args.known, per_label=args.per_label, n=args.n)
    print(f"Banking77 train split (CC BY 4.0): {len(stream)} requests, {len(set(lb for _, lb in stream))} intents; "
          f"the help desk starts knowing {len(labels)} intents from {len(bank)} examples")
    embedder = cached(HashingEmbedder() if args.embedder == "hashing" else default_embedder())
    answers = {t: lb for t, lb in stream}
    t0 = time.perf_counter()
    off_oracle = OracleModel(answers, cost_per_call=COST)
    off, off_windows, _, _ = await replay(graph_for(labels, bank, embedder, off_oracle), stream, window=args.window)
    t_off = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteLearningStore(Path(tmp) / "learning.sqlite")
        on_oracle = OracleModel(answers, cost_per_call=COST)
        graph = with_learning(graph_for(labels, bank, embedder, on_oracle), store, audit_sample=args.audit, refresh_s=0.0)
        learner = Learner.for_graph(graph, store, strategy=MemoryStrategy(adopt_after=args.adopt_after),
                                    embedder=embedder, near=args.near, holdout=0.2, margin=args.margin)
        t1 = time.perf_counter()
        on, on_windows, marks, adopted = await replay(graph, stream, learner=learner, every=args.every, window=args.window)
        t_on = time.perf_counter() - t1
        counts = await store.count()
        await store.close()
    print(f"\nwindow        escalation off  escalation on   cost off   cost on")
    for a, b in zip(off_windows, on_windows):
        print(f"{a['label']:<13} {a['escalations'] / a['runs']:>14.3f}  {b['escalations'] / b['runs']:>13.3f}  "
              f"${a['cost_usd']:>8.3f}  ${b['cost_usd']:>7.3f}")
    print()
    e_off, q_off, c_off = summary("learning off", off)
    e_on, q_on, c_on = summary("learning on", on)
    diff = bootstrap([b[1] - a[1] for a, b in zip(off, on)])
    print(f"quality difference (on - off, paired): {diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}]")
    print(f"second-half escalation rate: {e_on:.3f} vs {e_off:.3f}: {1 - e_on / e_off:.1%} lower (target >= 50%)")
    print(f"total cost: ${c_on:.3f} vs ${c_off:.3f} ({c_on / c_off:.2f}x; audits included)")
    print(f"labels adopted: {len(adopted)}; promotions: {len(marks)}; records: {counts}")
    print(f"wall time: learning off {t_off:.0f}s, learning on {t_on:.0f}s (cycles included); embedder {embedder.name}")
    md, png = write_report(args.out, on_windows, marks, title="help desk on Banking77: learning on vs off", baseline=off_windows)
    print(f"report: {md}, {png}")


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
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lora-steps", type=int, default=40)
    ap.add_argument("--out", default=".slmgraph/learning-benchmark")
    args = ap.parse_args()
    if args.part in ("stream", "all"):
        asyncio.run(stream_part(args))
    if args.part in ("lora", "all"):
        asyncio.run(lora_part(args))


if __name__ == "__main__":
    sys.exit(main())
