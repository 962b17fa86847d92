"""Turning a :class:`~slmgraph.config.Config` into bound models and a price table.

Each entry's backend (or a :class:`PooledModel` over its ``hosts``, in a
:class:`FallbackModel` when it names fallbacks) goes through :func:`~slmgraph.harden`,
the same seam ``build_graph`` uses: each endpoint (an Ollama host, an
OpenAI-compatible URL) gets one circuit breaker and one concurrency limit, with the
settings of the first entry that calls it, shared by every entry that calls it.
"""

from __future__ import annotations

import httpx

from .config import Config, ModelConfig
from .ledger import PriceTable
from .models._base import Model
from .models._ollama import DEFAULT_OLLAMA_HOST
from .models._breaker import CircuitBreaker, ConcurrencyLimit, endpoint_of
from .models._fallback import FallbackModel
from .models._retry import RetryPolicy

__all__ = ["models_from_config", "prices_from_config", "DEFAULT_OLLAMA_MODEL", "DEFAULT_OLLAMA_HOST", "ollama_models"]

DEFAULT_OLLAMA_MODEL = "qwen2.5:0.5b"


def ollama_models(host: str | None, timeout: float = 1.0) -> list[str] | None:
    """Names of the models an Ollama server has pulled, or ``None`` if it does not answer."""
    base = host or DEFAULT_OLLAMA_HOST
    base = base if "://" in base else f"http://{base}"
    try:
        r = httpx.get(f"{base.rstrip('/')}/api/tags", timeout=timeout)
        r.raise_for_status()
        return [m.get("name", "") for m in r.json().get("models", [])]
    except (httpx.HTTPError, ValueError):
        return None


def _resolve_auto(cfg: ModelConfig) -> ModelConfig:
    if cfg.provider != "auto":
        return cfg
    if cfg.hosts:
        return cfg.model_copy(update={"provider": "ollama", "model": cfg.model or DEFAULT_OLLAMA_MODEL})
    name = cfg.model or DEFAULT_OLLAMA_MODEL
    pulled = ollama_models(cfg.host)
    if pulled and (name in pulled or f"{name}:latest" in pulled):
        return cfg.model_copy(update={"provider": "ollama", "model": name})
    return cfg.model_copy(update={"provider": "embedded", "model": None})


def build_model(cfg: ModelConfig) -> Model:
    """One model from its config (``provider="auto"`` resolved first)."""
    cfg = _resolve_auto(cfg)
    if cfg.provider == "ollama":
        from .models._ollama import OllamaModel
        from .models._pool import PooledModel

        def one(host: str | None) -> OllamaModel:
            return OllamaModel(
                cfg.model or DEFAULT_OLLAMA_MODEL, host=host, num_ctx=cfg.num_ctx, keep_alive=cfg.keep_alive,
                timeout=cfg.timeout, connect_timeout=cfg.connect_timeout, idle_timeout=cfg.idle_timeout,
            )  # fmt: skip

        if cfg.hosts:
            return PooledModel(
                [one(h) for h in cfg.hosts], max_parallel=cfg.max_parallel, failures=cfg.breaker_failures,
                cooldown_s=cfg.breaker_cooldown, probe_timeout_s=cfg.connect_timeout,
            )  # fmt: skip
        return one(cfg.host)
    if cfg.provider == "openai":
        from .models._openai import OpenAIModel

        kwargs = {"context_window": cfg.context_window} if cfg.context_window else {}
        return OpenAIModel(
            cfg.model or "", base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.timeout,
            connect_timeout=cfg.connect_timeout, idle_timeout=cfg.idle_timeout, **kwargs,
        )  # fmt: skip
    from .models._llamacpp import LlamaCppModel

    return LlamaCppModel(cfg.model_path, n_ctx=cfg.context_window or 2048, logprobs=cfg.logprobs)


def models_from_config(config: Config, *, name_detector=None) -> dict[str, Model]:
    """``{"small": ..., "large": ..., **config.models}``; ``"large"`` only when configured.

    Every model goes through :func:`~slmgraph.harden`: retry, breaker and limit
    for what calls over the network, and a :class:`~slmgraph.privacy.PrivacyGate`
    applying ``config.privacy`` for what leaves the machine; ``name_detector``
    serves a policy with ``names = "external"``.

    Raises:
        ConfigError: a model's endpoint is remote and the config has no ``[privacy]``.
    """
    from ._harden import Guards, harden

    policy = RetryPolicy(attempts=config.retry_attempts)
    entries = {"small": config.small, **({"large": config.large} if config.large else {}), **config.models}
    backends = {key: build_model(cfg) for key, cfg in entries.items()}
    guards: Guards = {}
    for key, cfg in entries.items():  # the first entry that calls an endpoint sets its guard
        where = endpoint_of(backends[key])
        if where not in guards:
            breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_cooldown, name=where)
            guards[where] = (breaker, ConcurrencyLimit(cfg.max_parallel))
    single = {key: harden(m, retry=policy, guards=guards, privacy=config.privacy, name_detector=name_detector, key=key)
              for key, m in backends.items()}  # fmt: skip
    return {
        key: FallbackModel([single[key], *(single[t] for t in cfg.fallback)]) if cfg.fallback else single[key]
        for key, cfg in entries.items()
    }


def prices_from_config(config: Config) -> PriceTable:
    """The price table of ``config``: each entry's ``price`` under its binding key
    (``"small"``, ``"large"``, ``"coder"``), and ``machine_usd_per_hour`` for local
    calls without a price. The baseline is the ``"large"`` entry's price."""
    entries = {"small": config.small, **({"large": config.large} if config.large else {}), **config.models}
    table = PriceTable(machine_usd_per_hour=config.machine_usd_per_hour)
    for key, cfg in entries.items():
        if cfg.price is not None:
            table.prices[key] = cfg.price
    return table
