"""The embedding cache, the trained head and the out-of-scope rule of the example bank."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from slmgraph.agents import EmbeddingRouter
from slmgraph.models import EmbeddingCache, HashingEmbedder
from slmgraph.skills import ExampleBank, LinearHead, OOSRule

EXAMPLES = [
    ("my card has not arrived in the post", "card"), ("when will my new card be delivered", "card"),
    ("the card I ordered never came", "card"), ("card delivery is taking ages", "card"),
    ("I want a refund for this order", "refund"), ("please give me my money back for the purchase", "refund"),
    ("how do I get a refund", "refund"), ("refund the item I returned", "refund"),
    ("what is your exchange rate for euros", "fx"), ("how much do you charge to convert dollars", "fx"),
    ("which rate do you use for currency exchange", "fx"), ("is the euro exchange rate good today", "fx"),
]


class Counting:
    """A cacheable encoder that counts the texts it embeds (hashed n-grams inside)."""

    def __init__(self, dim: int = 64, identity: str | None = None) -> None:
        self.inner = HashingEmbedder(dim=dim)
        self.name = f"counting-{dim}"
        self.identity = identity or self.name
        self.seen: list[str] = []

    async def embed(self, texts):
        self.seen.extend(texts)
        return await self.inner.embed(texts)


SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {tests!r})
    from test_bank_cache import Counting, EXAMPLES
    from slmgraph.skills import ExampleBank

    async def main():
        enc = Counting()
        bank = ExampleBank(EXAMPLES, None, enc, cache={cache!r})
        await bank.ready()
        vec = (await bank.query(["card never arrived"]))[0]
        print(json.dumps({{"embedded": len(enc.seen) - 1, "head": bank.head_source,
                          "matrix": bank._matrix.tolist(), "proba": bank.head.proba(vec[None, :]).tolist()}}))

    asyncio.run(main())
""")


def _run(tmp_path, cache):
    from pathlib import Path

    code = SCRIPT.format(tests=str(Path(__file__).parent), cache=str(cache))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_vectors_and_head_from_the_cache(tmp_path):
    first = _run(tmp_path, tmp_path / "cache")
    second = _run(tmp_path, tmp_path / "cache")
    assert first["embedded"] == len(EXAMPLES) + 0 and first["head"] == "fitted"
    assert second["embedded"] == 0 and second["head"] == "cache"  # no encoder call for cached texts
    assert np.allclose(first["matrix"], second["matrix"]) and np.allclose(first["proba"], second["proba"])


async def test_the_cache_key_changes_with_the_encoder(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b, a_again, other_weights = Counting(64), Counting(128), Counting(64), Counting(64, identity="counting-64@v2")
    for enc in (a, b, a_again, other_weights):
        await ExampleBank(EXAMPLES, None, enc, cache=cache, head=False).matrix()
    assert len(a.seen) == len(b.seen) == len(other_weights.seen) == len(EXAMPLES)
    assert a_again.seen == []
    assert len({cache.path_for(e.identity) for e in (a, b, other_weights)}) == 3


async def test_the_head_is_deterministic_with_a_seed(tmp_path):
    enc = Counting()
    banks = [ExampleBank(EXAMPLES, None, enc, cache=False, seed=s) for s in (3, 3, 4)]
    for bank in banks:
        await bank.ready()
    one, two, other = (b.head for b in banks)
    assert np.array_equal(one.W, two.W) and np.array_equal(one.oof, two.oof) and one.temperature == two.temperature
    assert not np.array_equal(one.oof, other.oof)  # another seed draws other folds
    x = banks[0]._matrix[:3]
    assert np.array_equal(one.proba(x), two.proba(x))
    assert np.allclose(one.proba(x).sum(axis=1), 1.0)
    restored = LinearHead.from_bytes(one.to_bytes())
    assert np.array_equal(restored.proba(x), one.proba(x))


def test_the_head_learns_the_labels():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 32))
    y = rng.integers(0, 6, 600)
    X = centers[y] + rng.normal(scale=0.8, size=(600, 32))
    head = LinearHead(seed=1).fit(X[:400], y[:400], 6)
    assert (head.proba(X[400:]).argmax(axis=1) == y[400:]).mean() > 0.9
    assert 0.05 < head.temperature < 20
    large = LinearHead(seed=1, holdout_above=100).fit(X[:400], y[:400], 6)  # one held-out fold only
    held = ~np.isnan(large.oof[:, 0])
    assert 40 < held.sum() < 160 and 0.05 < large.temperature < 20
    assert (large.proba(X[400:]).argmax(axis=1) == y[400:]).mean() > 0.9


async def test_thresholds_leave_one_out_without_oos_data_and_fitted_with_it(tmp_path):
    bank = ExampleBank(EXAMPLES, None, HashingEmbedder(), cache=False)
    loo = await bank.loo_rule(0.25)
    assert loo.fitted_on == "leave-one-out"
    sims = bank.loo_similarity()
    assert loo.min_similarity == pytest.approx(float(np.quantile(sims, 0.25)), abs=1e-6)
    oof = bank.head.oof[np.arange(len(EXAMPLES)), bank.codes[: len(EXAMPLES)]]  # each example's own label
    assert loo.min_confidence == pytest.approx(float(np.nanquantile(oof, 0.25)), abs=1e-6)
    assert loo.min_confidence > 0.1  # not the quantile over every (example, label) pair, nearly all tiny
    texts = ["my card has still not come", "refund me please", "euro exchange rate",
             "tell me a joke about cats", "what is the weather in paris", "recommend a good film"]
    gold = ["card", "refund", "fx", None, None, None]
    fitted = await bank.fit_rule(texts, gold)
    assert fitted.fitted_on == "validation"
    best = [bank.rank(v, 1)[0] for v in await bank.query(texts)]
    kept = [fitted.in_scope(b.probability, b.similarity) for b in best]
    assert kept == [True, True, True, False, False, False]


async def test_the_router_says_none_below_the_bar_and_keeps_the_nearest_labels(tmp_path):
    strict = EmbeddingRouter(EXAMPLES, HashingEmbedder(), rule=OOSRule(0.0, 0.99, "given"))
    choice = await strict.choose("my new card has not been delivered")
    assert choice.label is None and choice.top == "card"
    assert [r.label for r in choice.nearest][0] == "card" and len(choice.nearest) == 3
    loose = EmbeddingRouter(EXAMPLES, HashingEmbedder(), rule=OOSRule(0.0, -1.0, "given"))
    assert (await loose.choose("my new card has not been delivered")).label == "card"


async def test_a_corrupted_cache_file_is_detected_rebuilt_and_warned_about(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    enc = Counting()
    good = await ExampleBank(EXAMPLES, None, enc, cache=cache, head=False).matrix()
    path = cache.path_for(enc.identity)
    path.write_bytes(b"this is not a database" * 100)
    caplog.set_level(logging.WARNING, logger="slmgraph.embed")
    fresh = EmbeddingCache(tmp_path)  # a new process: the file is checked again
    enc2 = Counting()
    again = await ExampleBank(EXAMPLES, None, enc2, cache=fresh, head=False).matrix()
    assert "cannot be read" in caplog.text and path.with_name(path.name + ".corrupt").exists()
    assert len(enc2.seen) == len(EXAMPLES) and np.allclose(again, good)


async def test_a_damaged_vector_is_never_served(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    enc = Counting()
    good = await ExampleBank(EXAMPLES, None, enc, cache=cache, head=False).matrix()
    with sqlite3.connect(cache.path_for(enc.identity)) as conn:  # flip the vectors, keep the checksums
        conn.execute("UPDATE vectors SET vec = zeroblob(length(vec)) WHERE rowid % 3 = 0")
    caplog.set_level(logging.WARNING, logger="slmgraph.embed")
    enc2 = Counting()
    again = await ExampleBank(EXAMPLES, None, enc2, cache=cache, head=False).matrix()
    assert "failed their checksum" in caplog.text
    assert 0 < len(enc2.seen) < len(EXAMPLES) and np.allclose(again, good)


async def test_a_bank_file_is_embedded_once_per_content_version(tmp_path):
    data = tmp_path / "bank.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lb}\n' for t, lb in EXAMPLES))
    cache = EmbeddingCache(tmp_path / "cache")
    first, second, third = Counting(), Counting(), Counting()
    await ExampleBank(str(data), None, first, cache=cache).ready()
    await ExampleBank(str(data), None, second, cache=cache).ready()
    with open(data, "a") as f:
        f.write('"can I change my pin at an atm",pin\n')
    bank = ExampleBank(data, None, third, cache=cache)
    await bank.ready()
    assert len(first.seen) == len(EXAMPLES) and second.seen == []
    assert third.seen == ["can I change my pin at an atm"] and "pin" in bank.names


async def test_add_examples_embeds_only_new_texts_and_refits_the_head(tmp_path):
    enc = Counting()
    bank = ExampleBank(EXAMPLES, None, enc, cache=tmp_path)
    await bank.ready()
    before = len(enc.seen)
    await bank.add_examples([("I forgot my pin", "pin"), ("how do I reset my pin", "pin"),
                             ("change the pin of my card", "pin")])
    assert enc.seen[before:] == ["I forgot my pin", "how do I reset my pin", "change the pin of my card"]
    assert bank.head.W.shape[1] == 4 and "pin" in bank.names
    best = bank.rank((await bank.query(["reset my pin please"]))[0], 1)[0]
    assert best.label == "pin"


async def test_the_progress_callback_sees_the_bank_being_embedded(tmp_path):
    calls = []
    cache = EmbeddingCache(tmp_path, batch=5)
    await cache.embed(Counting(), [t for t, _ in EXAMPLES], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 12), (10, 12), (12, 12)]
