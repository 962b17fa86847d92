"""Typed configuration: explicit values first, then the environment, then a TOML file.

A TOML file looks like::

    route_threshold = 0.6
    machine_usd_per_hour = 0.10  # what local inference costs (default 0.10)

    [small]
    provider = "ollama"          # "auto" | "embedded" | "ollama" | "openai"
    model = "qwen2.5:0.5b"
    num_ctx = 4096

    [large]
    provider = "openai"
    model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"
    price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }   # the ledger's baseline

    [models.coder]               # extra binding keys, for skills with model="coder"
    provider = "ollama"
    model = "qwen2.5-coder:1.5b"
    hosts = ["http://gpu1:11434", "http://gpu2:11434"]   # a pool, least-loaded first
    timeout = 30                 # whole call / first token, seconds
    connect_timeout = 2          # TCP connect
    idle_timeout = 10            # longest gap mid-stream
    max_parallel = 1             # calls in flight per host; more queue on our side
    fallback = ["small"]         # when every host is down or cooling down

Environment: ``SLMGRAPH_SMALL_PROVIDER``, ``SLMGRAPH_SMALL_MODEL``, ``OLLAMA_HOST``,
``SLMGRAPH_LARGE_PROVIDER``, ``SLMGRAPH_LARGE_MODEL``, ``OPENAI_BASE_URL``,
``OPENAI_API_KEY``, ``SLMGRAPH_CHECKPOINT``, ``SLMGRAPH_PRIVACY``. Escalation to a
large model is off unless a large model is configured, and a model whose endpoint
is not on this machine needs a ``[privacy]`` policy (see :mod:`slmgraph.privacy`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from .ledger import DEFAULT_MACHINE_USD_PER_HOUR, Price
from .privacy._policy import PrivacyPolicy

__all__ = ["ModelConfig", "Config", "load_config"]

Provider = Literal["auto", "embedded", "ollama", "openai"]


class ModelConfig(BaseModel):
    """How to reach one model.

    ``provider="auto"`` (small model only) uses Ollama when its server answers and
    has ``model`` pulled, and the embedded engine otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Provider = "auto"
    model: str | None = None
    host: str | None = None
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    num_ctx: PositiveInt = 4096
    context_window: PositiveInt | None = None
    keep_alive: str | None = "5m"
    timeout: PositiveFloat = 60.0
    model_path: str | None = None
    #: Embedded engine: load it with token logprobs, so the default confidence bar
    #: applies (costs ``n_ctx x vocabulary x 4`` bytes: about 400 MB for SmolLM2 at 2048).
    logprobs: bool = False
    price: Price | None = None
    # Reliability (see docs/reliability.md).
    connect_timeout: PositiveFloat = 2.0
    idle_timeout: PositiveFloat | None = None
    hosts: list[str] | None = None  # a pool; overrides `host` (and OLLAMA_HOST)
    max_parallel: PositiveInt | None = None
    breaker_failures: PositiveInt = 5
    breaker_cooldown: NonNegativeFloat = 30.0
    fallback: list[str] = Field(default_factory=list)
    #: Send an API key over plain ``http://`` to a host that is not this machine
    #: (refused by default: the key would travel in cleartext).
    allow_plain_http: bool = False

    @field_validator("host", "base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parsed = urlparse(v if "://" in v else f"http://{v}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"{v!r} has an invalid port") from None
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("the host list is empty; name at least one host, or drop `hosts`")
        if info.data.get("provider") not in ("ollama", "auto"):
            raise ValueError("a host pool needs provider 'ollama'")
        for i, host in enumerate(v):
            try:
                cls._url(host)
            except ValueError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        if len(set(v)) != len(v):
            raise ValueError("a host is listed twice")
        return v


class Config(BaseModel):
    """The whole configuration of a graph run."""

    model_config = ConfigDict(extra="forbid")

    small: ModelConfig = Field(default_factory=ModelConfig)
    large: ModelConfig | None = None
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    route_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    checkpoint: str = ".slmgraph/checkpoints.sqlite"
    max_steps: PositiveInt = 4
    retry_attempts: PositiveInt = 3
    serve: dict[str, Any] = Field(default_factory=dict)  # validated by slmgraph.serve
    learning: dict[str, Any] = Field(default_factory=dict)  # validated by slmgraph.learn
    privacy: PrivacyPolicy | None = Field(default=None, validate_default=True)
    #: USD per hour of this machine, the cost of local calls with no ``price``
    #: (see :data:`slmgraph.ledger.DEFAULT_MACHINE_USD_PER_HOUR`).
    machine_usd_per_hour: NonNegativeFloat = DEFAULT_MACHINE_USD_PER_HOUR
    #: Acceptance thresholds by skill name (``"*"``: every skill), overriding each
    #: skill's ``AcceptancePolicy.min_confidence``; written by ``slmgraph calibrate``.
    min_confidence: dict[str, float] = Field(default_factory=dict)

    @field_validator("min_confidence")
    @classmethod
    def _min_confidence(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"min_confidence for {name!r} must be between 0 and 1, got {value}")
        return v

    @field_validator("large")
    @classmethod
    def _large(cls, v: ModelConfig | None) -> ModelConfig | None:
        if v is None:
            return v
        if v.provider == "auto":  # decided after every source is merged
            v = v.model_copy(update={"provider": "ollama" if v.hosts else "openai"})
        if v.provider == "embedded":
            raise ValueError("the large model must use provider 'openai' or 'ollama'")
        if not v.model:
            raise ValueError("a large model needs `model`")
        return v

    @model_validator(mode="after")
    def _fallbacks(self) -> Config:
        """A fallback names another entry, and never one that leaves the machine: data
        goes off-machine only through escalation, where the privacy gate runs."""
        entries = {"small": self.small, **({"large": self.large} if self.large else {}), **self.models}
        for key, cfg in entries.items():
            field = f"{key if key in ('small', 'large') else 'models.' + key}.fallback"
            for target in cfg.fallback:
                if target == key or target not in entries:
                    known = ", ".join(k for k in entries if k != key)
                    raise ConfigError(field, f"{target!r} is not another model entry (known: {known or 'none'})")
                if remote_url(entries[target]):
                    raise ConfigError(
                        field,
                        f"{target!r} is a remote endpoint; a fallback may not send data off the "
                        "machine (escalate to it instead, through the privacy gate)",
                    )
        return self

    @field_validator("privacy")
    @classmethod
    def _privacy(cls, v: PrivacyPolicy | None, info: ValidationInfo) -> PrivacyPolicy | None:
        # A model whose endpoint is not on this machine needs an explicit policy.
        if v is not None:
            return v
        bound = {"small": info.data.get("small"), "large": info.data.get("large")}
        bound.update({f"models.{k}": c for k, c in (info.data.get("models") or {}).items()})
        for key, cfg in bound.items():
            url = remote_url(cfg)
            if url:
                raise ValueError(
                    f"the {key} model's endpoint {url} is not on this machine, so it needs a privacy "
                    'policy: add [privacy] with action = "redact", "block" or "allow" (or set '
                    "SLMGRAPH_PRIVACY), or point it at a local server"
                )
        return v


def remote_url(cfg: ModelConfig | None) -> str | None:
    """The endpoint of ``cfg`` when it is not on this machine, else ``None``.

    An OpenAI-compatible model without ``base_url`` goes to OpenAI; an Ollama model
    without ``host`` goes to the local default; the embedded engine is local.
    """
    from .privacy._gate import is_local_endpoint

    if cfg is not None and cfg.hosts:  # a pool: remote if any of its hosts is
        return next((h for h in cfg.hosts if not is_local_endpoint(h)), None)
    if cfg is None or cfg.provider == "embedded" or (cfg.provider == "auto" and not cfg.host):
        return None
    if cfg.provider == "openai":
        url = cfg.base_url or "https://api.openai.com/v1"
    else:
        url = cfg.host or "http://127.0.0.1:11434"
    return None if is_local_endpoint(url) else url


_ENV = {
    "SLMGRAPH_SMALL_PROVIDER": ("small", "provider"),
    "SLMGRAPH_SMALL_MODEL": ("small", "model"),
    "OLLAMA_HOST": ("small", "host"),
    "SLMGRAPH_LARGE_PROVIDER": ("large", "provider"),
    "SLMGRAPH_LARGE_MODEL": ("large", "model"),
    "OPENAI_BASE_URL": ("large", "base_url"),
    "SLMGRAPH_CHECKPOINT": (None, "checkpoint"),
    "SLMGRAPH_PRIVACY": ("privacy", "action"),
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, recursively; ``None`` in ``extra`` means "not set"
    at any depth, so an unset flag never overrides the file or the environment."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping):
            merged = _merge(out.get(key) if isinstance(out.get(key), Mapping) else {}, value)
            if merged:
                out[key] = merged
        elif value is not None:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, (section, key) in _ENV.items():
        if env.get(var):
            target = out.setdefault(section, {}) if section else out
            target[key] = env[var]
    large = out.get("large")
    # OPENAI_BASE_URL alone does not switch escalation on: a large model must be named.
    if large is not None and "model" not in large:
        out.pop("large")
    return out


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from a TOML file, the environment and explicit overrides.

    Later sources win: file < environment < overrides.

    Raises:
        ConfigError: naming the first bad field, e.g. ``small.timeout``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"file {str(p)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"{p} is not valid UTF-8 TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError("config", f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    data = _merge(data, _from_env(os.environ if env is None else env))
    data = _merge(data, overrides or {})
    source = os.environ if env is None else env
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        for var, (section, key) in _ENV.items():  # a bad value from the environment: name the variable
            if tuple(str(p) for p in err["loc"][:2]) == (section, key) and source.get(var) and \
                    data.get(section, {}).get(key) == source.get(var):  # fmt: skip
                field = f"{var} ({field})"
        raise ConfigError(field, err["msg"]) from None
    _refuse_cleartext_keys(cfg, source)
    return cfg


def _refuse_cleartext_keys(cfg: Config, env: Mapping[str, str]) -> None:
    """An OpenAI-compatible endpoint on another machine over plain ``http://`` would
    receive the API key in cleartext: refused unless ``allow_plain_http`` is set."""
    from .privacy._gate import is_local_endpoint

    entries = {"small": cfg.small, **({"large": cfg.large} if cfg.large else {}),
               **{f"models.{k}": v for k, v in cfg.models.items()}}
    for key, m in entries.items():
        url = m.base_url or (env.get("OPENAI_BASE_URL") if key == "large" else None)
        has_key = bool(m.api_key or env.get("OPENAI_API_KEY"))
        if m.provider != "openai" or not url or not has_key or m.allow_plain_http:
            continue
        if urlparse(url).scheme == "http" and not is_local_endpoint(url):
            raise ConfigError(
                f"{key}.base_url",
                f"{url} is plain http on another machine, so the API key would travel in cleartext; "
                f"use https, or set allow_plain_http = true in [{key}] if the network is trusted",
            )
