"""Turning a :class:`~slmgraph.config.Config` into bound models and a price table."""

from __future__ import annotations

import httpx

from .config import Config, ModelConfig
from .ledger import PriceTable
from .models._base import Model
from .models._ollama import DEFAULT_OLLAMA_HOST
from .models._retry import RetryingModel, RetryPolicy

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

        return OllamaModel(
            cfg.model or DEFAULT_OLLAMA_MODEL, host=cfg.host, num_ctx=cfg.num_ctx,
            keep_alive=cfg.keep_alive, timeout=cfg.timeout,
        )
    if cfg.provider == "openai":
        from .models._openai import OpenAIModel

        kwargs = {"context_window": cfg.context_window} if cfg.context_window else {}
        return OpenAIModel(cfg.model or "", base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.timeout, **kwargs)
    from .models._llamacpp import LlamaCppModel

    return LlamaCppModel(cfg.model_path, n_ctx=cfg.context_window or 2048)


def models_from_config(config: Config, *, name_detector=None) -> dict[str, Model]:
    """``{"small": ..., "large": ..., **config.models}``; ``"large"`` only when configured.

    Every model whose endpoint is not on this machine comes wrapped in a
    :class:`~slmgraph.privacy.PrivacyGate` applying ``config.privacy``;
    ``name_detector`` serves a policy with ``names = "external"``.
    """
    policy = RetryPolicy(attempts=config.retry_attempts)
    models: dict[str, Model] = {"small": RetryingModel(build_model(config.small), policy)}
    if config.large is not None:
        models["large"] = RetryingModel(build_model(config.large), policy)
    for key, cfg in config.models.items():
        models[key] = RetryingModel(build_model(cfg), policy)
    from .privacy._wiring import gate_remote_models

    return gate_remote_models(models, config.privacy, name_detector=name_detector)


def prices_from_config(config: Config) -> PriceTable:
    table = PriceTable()
    for cfg in (config.small, config.large, *config.models.values()):
        if cfg is not None and cfg.price is not None and cfg.model:
            table.prices[cfg.model] = cfg.price
    if config.large is not None:
        table.baseline_model = config.large.model
    return table
