"""Changing a built graph's confidence thresholds without rebuilding its skills.

``slmgraph calibrate`` writes ``route_threshold`` and ``[min_confidence]`` to a
config file; :func:`apply_config_thresholds` makes every graph built from that
config honour them, whatever its factory chose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .._errors import ConfigError
from ..config import Config
from ._graph import Checkpoint, SLMGraph

__all__ = ["with_thresholds", "apply_config_thresholds", "ALL_SKILLS"]

#: The ``min_confidence`` key that applies to every skill without its own entry.
ALL_SKILLS = "*"

_KEEP = object()


def with_thresholds(
    graph: SLMGraph,
    *,
    route_threshold: float | None = None,
    min_confidence: Mapping[str, float | None] | None = None,
    checkpoint: Checkpoint | object = _KEEP,
) -> SLMGraph:
    """A copy of ``graph`` with other thresholds (and optionally another checkpoint).

    Args:
        route_threshold: the router's threshold; ``None`` keeps the graph's.
        min_confidence: acceptance thresholds by skill name, ``"*"`` for every
            skill without its own entry; a value of ``None`` accepts any confidence.
        checkpoint: where the copy checkpoints (``None``: nowhere); default: the same.

    Raises:
        ConfigError: a threshold names a skill the graph does not have.
    """
    spec = graph.spec
    changes: dict = {}
    if route_threshold is not None:
        if not 0.0 <= route_threshold <= 1.0:
            raise ConfigError("route_threshold", f"must be between 0 and 1, got {route_threshold}")
        changes["route_threshold"] = route_threshold
    if min_confidence:
        unknown = sorted(set(min_confidence) - set(spec.skills) - {ALL_SKILLS})
        if unknown:
            raise ConfigError(
                "min_confidence", f"no skill named {unknown[0]!r} in graph {graph.name!r}; skills: {', '.join(spec.skills)}"
            )
        skills = {}
        for name, skill in spec.skills.items():
            if name in min_confidence or ALL_SKILLS in min_confidence:
                value = min_confidence[name] if name in min_confidence else min_confidence[ALL_SKILLS]
                skill = skill.clone(acceptance=dataclasses.replace(skill.acceptance, min_confidence=value))
            skills[name] = skill
        changes["skills"] = skills
    new_spec = dataclasses.replace(spec, **changes) if changes else spec
    return SLMGraph(new_spec, checkpoint=graph.checkpoint if checkpoint is _KEEP else checkpoint, name=graph.name)  # type: ignore[arg-type]


def apply_config_thresholds(graph: SLMGraph, config: Config) -> SLMGraph:
    """``graph`` with the config's ``[min_confidence]`` table, and its
    ``route_threshold`` when the config sets one explicitly."""
    route = config.route_threshold if "route_threshold" in config.model_fields_set else None
    if route is None and not config.min_confidence:
        return graph
    return with_thresholds(graph, route_threshold=route, min_confidence=config.min_confidence)
