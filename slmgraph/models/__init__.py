"""Model backends behind one async seam.

- :class:`OllamaModel`: a model served by Ollama (official ``ollama`` client).
- :class:`OpenAIModel`: any OpenAI-compatible endpoint (official ``openai`` client).
- :class:`LlamaCppModel`: the embedded engine, in-process via llama-cpp-python.
- :class:`LangChainModel`: any langchain-core chat model.
- :class:`RetryingModel`: slmgraph's one retry layer around any of them.
- :class:`GuardedModel`, :class:`FallbackModel`, :class:`PooledModel`: a circuit
  breaker and concurrency limit per endpoint, fallback, and a pool of hosts.
"""

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
from ._embed import Embedder, HashingEmbedder, OllamaEmbedder, OnnxE5Embedder, cosine, default_embedder
from ._embed_cache import EmbeddingCache
from ._langchain import LangChainModel
from ._llamacpp import LlamaCppModel, default_gguf_path
from ._ollama import OllamaModel
from ._openai import OpenAIModel
from ._retry import RetryingModel, RetryPolicy
from ._breaker import CircuitBreaker, ConcurrencyLimit, GuardedModel
from ._fallback import FallbackModel
from ._pool import PooledModel

__all__ = [
    "Model",
    "Message",
    "ModelSettings",
    "ModelReply",
    "StreamChunk",
    "TokenLogprob",
    "Usage",
    "parse_json_reply",
    "try_parse_json",
    "OllamaModel",
    "OpenAIModel",
    "LlamaCppModel",
    "LangChainModel",
    "default_gguf_path",
    "RetryPolicy",
    "RetryingModel",
    "Embedder",
    "OllamaEmbedder",
    "HashingEmbedder",
    "OnnxE5Embedder",
    "EmbeddingCache",
    "default_embedder",
    "cosine",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "GuardedModel",
    "FallbackModel",
    "PooledModel",
]
