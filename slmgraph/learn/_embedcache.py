"""Embedding in the learning loop: cached per text in memory, with a progress bar.

Curation, every learned bank and every shadow evaluation embed mostly the same
texts; :func:`cached` wraps an :class:`~slmgraph.models.Embedder` so each text is
embedded once per process.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..eval._runner import Progress
from ..models._embed import Embedder

__all__ = ["CachedEmbedder", "cached", "embed_all"]


class CachedEmbedder:
    """An embedder that remembers each text's vector (in memory, per process)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self._vectors: dict[str, Any] = {}

    async def embed(self, texts: list[str]) -> list[Any]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vec in zip(missing, await self.inner.embed(missing)):
                self._vectors[text] = vec
        return [self._vectors[t] for t in texts]

    def __len__(self) -> int:
        return len(self._vectors)

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r})"


_WRAPPED: dict[int, CachedEmbedder] = {}


def cached(embedder: Embedder) -> CachedEmbedder:
    """The one cache for ``embedder`` in this process (an already cached one as is)."""
    if isinstance(embedder, CachedEmbedder):
        return embedder
    found = _WRAPPED.get(id(embedder))
    if found is None or found.inner is not embedder:
        found = _WRAPPED[id(embedder)] = CachedEmbedder(embedder)
    return found


async def embed_all(
    embedder: Embedder, texts: list[str], *, progress: bool = False, label: str = "embed",
    batch: int = 64, stream: TextIO | None = None,
) -> list[Any]:
    """Embed ``texts`` in batches, drawing a progress bar on stderr with ``progress``."""
    bar = Progress(len(texts), stream=stream or sys.stderr, enabled=progress, label=label)
    out: list[Any] = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        out.extend(await embedder.embed(chunk))
        bar.done = min(len(texts), i + len(chunk))
        bar.draw()
    bar.close()
    return out
