"""The ``[learning]`` section of a config file, and the graphs it makes learn.

    [learning]
    enabled = true             # ready graphs (run, serve) capture and serve learned versions
    store = ".slmgraph/learning.sqlite"   # a file or a postgresql:// DSN; default: the
                                          # checkpoint's database when that is PostgreSQL,
                                          # else learning.sqlite beside the checkpoint file
    audit_sample = 0.05        # share of accepted answers the large model spot-checks
    raw = false                # keep records unredacted (off: PII is scrubbed first)
    refresh_s = 1.0            # how stale the served version may be
    adopt_after = 3            # agreeing records that make a proposed label real
    holdout = 0.2              # newest share of records held out for shadow evaluation
    margin = 0.02              # how much worse on quality a candidate may be (interval bound)
    shadow_pending = 2         # shadow runs in flight at most (`slmgraph learn shadow`); 0: never shadow
    [learning.drift]
    window = 200
    min_runs = 50
    escalation_margin = 0.10
    min_audits = 10
    disagreement_bound = 0.25
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._errors import ConfigError
from ..config import Config

__all__ = ["LearningConfig", "DriftConfig", "learning_config", "learning_graph", "store_of"]


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(200, ge=1)
    min_runs: int = Field(50, ge=1)
    escalation_margin: float = Field(0.10, ge=0.0, le=1.0)
    min_audits: int = Field(10, ge=1)
    disagreement_bound: float = Field(0.25, ge=0.0, le=1.0)


class LearningConfig(BaseModel):
    """Settings of the learning loop (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    store: str | None = None
    audit_sample: float = Field(0.0, ge=0.0, le=1.0)
    raw: bool = False
    refresh_s: float = Field(1.0, ge=0.0)
    adopt_after: int = Field(3, ge=1)
    near_duplicate: float = Field(0.97, gt=0.0, le=1.0)
    holdout: float = Field(0.2, ge=0.0, lt=1.0)
    margin: float = Field(0.02, ge=0.0, le=1.0)
    shadow_pending: int = Field(2, ge=0)
    drift: DriftConfig | None = Field(default_factory=DriftConfig)


def learning_config(config: Config) -> LearningConfig:
    """The validated ``[learning]`` section.

    Raises:
        ConfigError: names the bad field, e.g. ``learning.audit_sample``.
    """
    try:
        return LearningConfig.model_validate(getattr(config, "learning", None) or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError("learning." + ".".join(str(p) for p in err["loc"]), err["msg"]) from None


def store_of(config: Config) -> Any:
    """The learning store the config names: ``[learning] store`` (a file or a
    PostgreSQL DSN); by default the checkpoint's database when the checkpoint is a
    ``postgresql://`` DSN, else ``learning.sqlite`` beside the checkpoint file."""
    from ..storage._pg import is_postgres

    cfg = learning_config(config)
    where = cfg.store or config.checkpoint
    if is_postgres(where):
        from ._postgres import PostgresLearningStore

        artifacts = Path(config.checkpoint).parent if not is_postgres(config.checkpoint) else Path(".slmgraph")
        return PostgresLearningStore(str(where).strip(), artifacts=artifacts)
    from ._sqlite import SqliteLearningStore

    return SqliteLearningStore(Path(cfg.store) if cfg.store else Path(config.checkpoint).parent / "learning.sqlite")


def learning_graph(graph: Any, config: Config) -> Any:
    """``graph`` made to learn when ``[learning] enabled = true``, else as it is."""
    cfg = learning_config(config)
    if not cfg.enabled:
        return graph
    from ._loop import DriftMonitor
    from ._serving import with_learning

    monitor = DriftMonitor(**cfg.drift.model_dump()) if cfg.drift is not None else None
    return with_learning(graph, store_of(config), audit_sample=cfg.audit_sample, raw=cfg.raw,
                         refresh_s=cfg.refresh_s, monitor=monitor, shadow_pending=cfg.shadow_pending)
