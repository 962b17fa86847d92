"""Routers: pick the skill that fits a request, or none.

A router needs one method, :meth:`Router.route`, returning a :class:`RouteDecision`.
Two more are optional and let the graph check a router when it is built:
``skill_names()`` (the skills it can name on its own; default: none) and
``model_keys()`` (the binding keys it calls; default: none). The graph escalates
when the decision names no skill or its confidence is below the route threshold.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .._context import RunContext
from .._errors import ConfigError, InvalidModelOutputError
from ..models._base import Message, ModelSettings
from ..skills._skill import Skill

__all__ = [
    "RouteDecision", "Router", "Rule", "RulesRouter", "ModelRouter", "ChainRouter",
    "check_router", "skill_names_of", "model_keys_of",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """A router's answer: a skill name or ``None`` ("none fits"), and a confidence in [0, 1]."""

    skill: str | None
    confidence: float
    router: str = ""


@runtime_checkable
class Router(Protocol):
    """Picks a skill for a request: ``async route(request, skills, ctx) -> RouteDecision``.

    Optional, read through :func:`skill_names_of` and :func:`model_keys_of`:

    - ``skill_names() -> set[str]``: the skill names the router can return on its
      own (not from ``skills``), checked against the graph's skills at build time;
    - ``model_keys() -> set[str]``: the model binding keys it calls, checked
      against the graph's models at build time.
    """

    async def route(self, request: str, skills: Sequence[Skill], ctx: RunContext) -> RouteDecision: ...


def check_router(router: object) -> None:
    """Refuse, at build time, a router the graph cannot call.

    Raises:
        ConfigError: (field ``router``) it has no async ``route(request, skills, ctx)``.
    """
    route = getattr(router, "route", None)
    name = type(router).__name__
    if route is None or not callable(route):
        raise ConfigError("router", f"{name} has no route() method; a router needs "
                          "`async def route(self, request, skills, ctx) -> RouteDecision`")  # fmt: skip
    if not inspect.iscoroutinefunction(route):
        raise ConfigError("router", f"{name}.route must be `async def`: the graph awaits it")
    for optional in ("skill_names", "model_keys"):
        value = getattr(router, optional, None)
        if value is not None and not callable(value):
            raise ConfigError(f"router.{optional}", f"{name}.{optional} must be a method returning a set of names")


def skill_names_of(router: object) -> set[str]:
    """The router's ``skill_names()``, or no names when it has none."""
    names = getattr(router, "skill_names", None)
    return set(names()) if names is not None else set()


@dataclass(frozen=True, slots=True)
class Rule:
    """Route to ``skill`` when any of ``patterns`` (regular expressions, case-insensitive) matches."""

    skill: str
    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"rules.{self.skill}", f"bad pattern {p!r}: {exc}") from None


class RulesRouter:
    """Deterministic routing by patterns; the first matching rule wins with confidence 1.

    Args:
        rules: the rules, in priority order.
        default: the skill for requests no rule matches; ``None`` means "none fits".
    """

    def __init__(self, rules: Sequence[Rule], *, default: str | None = None) -> None:
        self.rules = tuple(rules)
        self.default = default
        self._compiled = [(r.skill, [re.compile(p, re.IGNORECASE) for p in r.patterns]) for r in self.rules]

    def skill_names(self) -> set[str]:
        return {r.skill for r in self.rules} | ({self.default} if self.default else set())

    def model_keys(self) -> set[str]:
        return set()

    async def route(self, request: str, skills: Sequence[Skill], ctx: RunContext) -> RouteDecision:
        for skill, patterns in self._compiled:
            if any(p.search(request) for p in patterns):
                return RouteDecision(skill, 1.0, "rules")
        return RouteDecision(self.default, 1.0 if self.default else 0.0, "rules")


class ModelRouter:
    """A small model chooses among the skills' names and descriptions, or "none".

    Confidence is the joint probability of the tokens that spell the chosen name
    when the backend gives logprobs, otherwise the share of ``samples`` choices
    that agree.

    Args:
        model: binding key of the routing model.
        samples: choices drawn for agreement when logprobs are missing.
        instructions: overrides the routing system prompt.
        choices: the skills the model may pick (default: all of the graph's). Keep
            skills with side effects out of it and reach them by a
            :class:`RulesRouter` rule, so text in a request cannot steer a model
            to them.
    """

    NONE = "none"

    def __init__(
        self,
        model: str = "small",
        *,
        samples: int = 3,
        sample_temperature: float = 0.8,
        instructions: str | None = None,
        choices: Sequence[str] | None = None,
    ) -> None:
        if samples < 1:
            raise ConfigError("router.samples", "must be >= 1")
        if choices is not None and not choices:
            raise ConfigError("router.choices", "give at least one skill, or None for all of them")
        self.choices = None if choices is None else tuple(choices)
        self.model = model
        self.samples = samples
        self.sample_temperature = sample_temperature
        self.instructions = instructions

    def skill_names(self) -> set[str]:
        return set(self.choices or ())

    def model_keys(self) -> set[str]:
        return {self.model}

    def _messages(self, request: str, skills: Sequence[Skill]) -> list[Message]:
        menu = "\n".join(f"- {s.name}: {s.description}" for s in skills)
        system = self.instructions or (
            "You route a user's request to the one skill that can handle it.\n"
            f"Skills:\n{menu}\n- {self.NONE}: no skill above fits the request.\n"
            'Reply with JSON: {"skill": "<name>"}.'
        )
        return [Message("system", system), Message("user", request)]

    async def route(self, request: str, skills: Sequence[Skill], ctx: RunContext) -> RouteDecision:
        if self.choices is not None:
            skills = [s for s in skills if s.name in self.choices]
        names = [s.name for s in skills] + [self.NONE]
        schema = {
            "type": "object",
            "properties": {"skill": {"type": "string", "enum": names}},
            "required": ["skill"],
        }
        messages = self._messages(request, skills)
        first = await ctx.call(
            self.model, messages, node="router", schema=schema,
            settings=ModelSettings(temperature=0.0, logprobs=True, top_logprobs=1, max_tokens=32),
        )
        choice = _choice(first, names)
        if first.logprobs:
            # the probability of the chosen name's tokens, not of the JSON around them
            confidence = first.span_probability(choice or self.NONE) or first.confidence() or 0.0
        else:
            votes = Counter([choice])
            settings = ModelSettings(temperature=self.sample_temperature, max_tokens=32)
            for _ in range(self.samples - 1):
                reply = await ctx.call(self.model, messages, node="router", schema=schema, settings=settings)
                votes[_choice(reply, names)] += 1
            confidence = votes[choice] / self.samples
        return RouteDecision(None if choice in (None, self.NONE) else choice, confidence, "model")


def model_keys_of(router: object) -> set[str]:
    """The router's ``model_keys()``, or no keys when it has none."""
    keys = getattr(router, "model_keys", None)
    return set(keys()) if keys is not None else set()


def _choice(reply, names: list[str]) -> str | None:
    try:
        value = reply.value()
    except InvalidModelOutputError:
        return None
    skill = value.get("skill") if isinstance(value, dict) else None
    return skill if skill in names else None


class ChainRouter:
    """Asks each router in turn; the first decision that names a skill wins.

    Typical use: cheap deterministic rules first, then a model for the rest.
    """

    def __init__(self, routers: Sequence[Router]) -> None:
        if not routers:
            raise ConfigError("router.routers", "a ChainRouter needs at least one router")
        for r in routers:
            check_router(r)
        self.routers = tuple(routers)

    def skill_names(self) -> set[str]:
        return set().union(*(skill_names_of(r) for r in self.routers))

    def model_keys(self) -> set[str]:
        return set().union(*(model_keys_of(r) for r in self.routers))

    async def route(self, request: str, skills: Sequence[Skill], ctx: RunContext) -> RouteDecision:
        decision = RouteDecision(None, 0.0, "chain")
        for router in self.routers:
            decision = await router.route(request, skills, ctx)
            if decision.skill is not None:
                return decision
        return decision
