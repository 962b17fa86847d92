"""The head's lexical evidence (TF-IDF n-gram centroids) and the combined out-of-scope score."""

from __future__ import annotations

import numpy as np
import pytest

from slmgraph._errors import ConfigError
from slmgraph.agents import EmbeddingRouter
from slmgraph.models import HashingEmbedder
from slmgraph.skills import ExampleBank, LinearHead
from slmgraph.skills._lexical import LexicalModel, ngrams
from slmgraph.skills._oos import combined, fit_rule

WORDS = {
    0: ["card", "delivery", "arrive", "post", "courier"],
    1: ["refund", "money", "back", "return", "reimburse"],
    2: ["exchange", "rate", "euro", "dollar", "convert"],
    3: ["pin", "locked", "blocked", "unblock", "code"],
}
FILLER = ["please", "my", "the", "i", "want", "help", "with", "today", "now", "a"]


def lexical_data(n_per: int, seed: int):
    """Texts whose label shows only in their words; vectors that are pure noise."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for c, words in WORDS.items():
        for _ in range(n_per):
            picked = list(rng.choice(words, 2, replace=False)) + list(rng.choice(FILLER, 3))
            rng.shuffle(picked)
            texts.append(" ".join(picked))
            y.append(c)
    X = rng.normal(size=(len(y), 16)).astype(np.float32)
    return X, np.array(y), texts


def test_ngrams_are_words_bigrams_and_char_grams():
    grams = ngrams("Top-up failed")
    assert grams["w:top"] == 1 and grams["b:top up"] == 1 and grams["b:up failed"] == 1
    assert "c: to" in grams and "c:top " in grams and "c:faile" in grams and "c:failed" not in grams  # 3..5 chars only
    assert ngrams("") == {}


def test_the_lexical_model_scores_the_label_whose_words_a_text_shares():
    texts = ["my card has not arrived", "card delivery is late", "I want a refund", "give my money back"]
    model = LexicalModel().fit(texts, [0, 0, 1, 1], 2)
    s = model.scores(["when does the card arrive", "refund please", "zzz"])
    assert s[0].argmax() == 0 and s[1].argmax() == 1
    assert np.all(s[2] == 0)  # no known n-gram: no evidence
    assert np.all(s >= 0) and np.all(s <= 1 + 1e-6)  # cosines of non-negative vectors
    np.savez_compressed(buf := __import__("io").BytesIO(), **model.arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        restored = LexicalModel.from_arrays(z)
    assert np.array_equal(restored.scores(["card arrive"]), model.scores(["card arrive"]))


def test_the_head_adds_lexical_evidence_when_it_helps_and_restores_it():
    X, y, texts = lexical_data(30, seed=0)
    Xt, yt, tt = lexical_data(10, seed=1)
    head = LinearHead(seed=2).fit(X, y, 4, texts)
    assert head.lex is not None and head.lex_weight > 0  # chosen out of fold: the words carry the label
    with_text = (head.proba(Xt, tt).argmax(axis=1) == yt).mean()
    vector_only = (head.proba(Xt).argmax(axis=1) == yt).mean()
    assert with_text > 0.9 and vector_only < 0.5  # the vectors are noise
    assert np.allclose(head.proba(Xt, tt).sum(axis=1), 1.0)
    again = LinearHead(seed=2).fit(X, y, 4, texts)
    assert np.array_equal(again.proba(Xt, tt), head.proba(Xt, tt)) and again.lex_weight == head.lex_weight
    restored = LinearHead.from_bytes(head.to_bytes())
    assert restored.lex_weight == head.lex_weight and restored.temperature == head.temperature
    assert np.array_equal(restored.proba(Xt, tt), head.proba(Xt, tt))
    assert np.array_equal(restored.proba(Xt), head.proba(Xt))
    plain = LinearHead(seed=2, lexical=False).fit(X, y, 4, texts)
    assert plain.lex is None and np.array_equal(plain.proba(Xt, tt), plain.proba(Xt))
    with pytest.raises(ConfigError):
        LinearHead().fit(X, y, 4, texts[:-1])


def test_the_combined_score_separates_what_two_bars_cannot():
    rng = np.random.default_rng(0)
    sim = rng.uniform(0.5, 0.95, 400)
    log_conf = rng.uniform(-3.0, 0.0, 400)
    conf = np.exp(log_conf)
    inside = log_conf + 10 * sim >= 5.5  # a diagonal boundary in (log confidence, similarity)
    gold = ["a" if i else None for i in inside]
    rule = fit_rule(conf, sim, ["a"] * 400, gold, objective="accuracy")
    assert rule.similarity_weight == 10.0
    kept = np.array([rule.in_scope(c, s) for c, s in zip(conf, sim)])
    assert (kept == inside).mean() > 0.98
    assert rule.why(0.01, 0.5).startswith("the best label's score")
    assert combined(np.e ** -1, 0.5, 2.0) == pytest.approx(0.0)


def test_weights_in_the_rule_fit_count_requests():
    conf = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.75, 0.76, 0.77, 0.78]
    gold = ["a", "a", "a", None, None, None, None, None, None, None]
    sim, top = [0.0] * 10, ["a"] * 10
    counted = fit_rule(conf, sim, top, gold, objective="accuracy")
    ignored = fit_rule(conf, sim, top, gold, objective="accuracy", weights=[1] * 6 + [0] * 4)
    assert not counted.in_scope(0.7, 0.0) and not counted.in_scope(0.78, 0.0)  # four "none" rows up there
    assert [ignored.in_scope(c, 0.0) for c in conf[:6]] == [True, True, True, False, False, False]
    with pytest.raises(ConfigError):
        fit_rule(conf, sim, top, gold, weights=[1.0])


EXAMPLES = [(t, lb) for lb, ts in {
    "card": ["my card has not arrived", "when will my card come", "card delivery is slow", "the card never came"],
    "refund": ["I want a refund", "give me my money back", "refund my order", "how do I get reimbursed"],
    "fx": ["what is the euro rate", "exchange rate for dollars", "convert pounds to euros", "currency rate today"],
}.items() for t in ts]


async def test_the_bank_scores_its_own_examples_out_of_fold():
    bank = ExampleBank(EXAMPLES, None, HashingEmbedder(), cache=False, seed=0)
    await bank.ready()
    conf, sim, top, gold = bank.held_out_scores()
    assert len(conf) == len(EXAMPLES) and gold == [lb for _, lb in EXAMPLES]
    assert all(0 < c <= 1 for c in conf) and set(top) <= {"card", "refund", "fx"}
    assert max(sim) < 0.999  # the example itself is never its own nearest
    texts = ["card not here yet", "money back please", "weather in paris", "a joke about cats"]
    rule = await bank.fit_rule(texts, ["card", "refund", None, None])
    assert rule.fitted_on == "validation"


async def test_the_router_uses_the_request_text():
    router = EmbeddingRouter(EXAMPLES, HashingEmbedder(dim=32), seed=0, cache=False)
    await router.prepare()
    head = router.bank.head
    text = "exchange rate for euros"
    vector = (await router.bank.query([text]))[0]
    by_text = router.decide(vector, text)
    assert (await router.choose(text)).score == pytest.approx(by_text.score)
    assert head.lex is not None and head.lex_weight > 0  # 32-d hashed vectors: the words help out of fold
    assert by_text.score != pytest.approx(router.decide(vector).score)  # the text changes the probabilities
