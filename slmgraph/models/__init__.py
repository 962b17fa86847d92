"""Model backends behind one async seam.

- :class:`OllamaModel`: a model served by Ollama (official ``ollama`` client).
- :class:`OpenAIModel`: any OpenAI-compatible endpoint (official ``openai`` client).
- :class:`LlamaCppModel`: the embedded engine, in-process via llama-cpp-python.
- :class:`LangChainModel`: any langchain-core chat model.
- :class:`WrapperModel`: the base of every model in front of others:
  :class:`RetryingModel` (slmgraph's one retry layer), :class:`GuardedModel` (a
  circuit breaker and concurrency limit per endpoint), :class:`FallbackModel` and
  :class:`PooledModel` (a pool of hosts). :func:`slmgraph.harden` puts them together.

Each backend's module (and its SDK) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["Model", "Message", "ModelSettings", "ModelReply", "StreamChunk", "TokenLogprob", "Usage",
         "parse_json_reply", "try_parse_json"],
        "._base",
    ),
    **dict.fromkeys(["Embedder", "OllamaEmbedder", "HashingEmbedder", "OnnxE5Embedder", "default_embedder", "cosine"],
                    "._embed"),
    "EmbeddingCache": "._embed_cache",
    "OllamaModel": "._ollama",
    "OpenAIModel": "._openai",
    "LlamaCppModel": "._llamacpp",
    "default_gguf_path": "._llamacpp",
    "LangChainModel": "._langchain",
    "RetryPolicy": "._retry",
    "RetryingModel": "._retry",
    "CircuitBreaker": "._breaker",
    "ConcurrencyLimit": "._breaker",
    "GuardedModel": "._breaker",
    "FallbackModel": "._fallback",
    "PooledModel": "._pool",
    "WrapperModel": "._wrapper",
}  # fmt: skip

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._base import (
        Message,
        Model,
        ModelReply,
        ModelSettings,
        StreamChunk,
        TokenLogprob,
        Usage,
        parse_json_reply,
        try_parse_json,
    )
    from ._breaker import CircuitBreaker, ConcurrencyLimit, GuardedModel
    from ._embed import Embedder, HashingEmbedder, OllamaEmbedder, OnnxE5Embedder, cosine, default_embedder
    from ._embed_cache import EmbeddingCache
    from ._fallback import FallbackModel
    from ._langchain import LangChainModel
    from ._llamacpp import LlamaCppModel, default_gguf_path
    from ._ollama import OllamaModel
    from ._openai import OpenAIModel
    from ._pool import PooledModel
    from ._retry import RetryingModel, RetryPolicy
    from ._wrapper import WrapperModel
