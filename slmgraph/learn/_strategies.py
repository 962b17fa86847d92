"""Specialisation strategies: each turns a snapshot into a candidate version.

One interface, :class:`Strategy`: ``propose(base, snapshot, parent) -> Version``
makes a candidate; ``apply(version, base) -> (skill, models)`` builds what the
version serves (a skill, plus model bindings it replaces, e.g. a LoRA-tuned
small model). :func:`apply_version` dispatches on the version's strategy name.

- :class:`MemoryStrategy` (``"memory"``): curated examples join the skill's
  example bank (classification: retrieval bank; other skills: a bank from which
  the nearest examples are shown as few-shot turns). A new label the large model
  keeps proposing becomes a real label after ``adopt_after`` agreeing records.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigError
from ..models._embed import Embedder, default_embedder
from ..skills._bank import ExampleBank
from ..skills._classify import NONE, ClassifyRunner
from ..skills._run import run_skill
from ..skills._skill import Accepted, Example, Rejected, Skill
from ._capture import is_classifier
from ._embedcache import cached
from ._errors import EmptySnapshotError, UnknownVersionError
from ._records import canonical_json
from ._serving import schema_hash
from ._store import Snapshot, Version

__all__ = ["remember_settings", "Strategy", "MemoryStrategy", "FewShotRunner", "apply_version", "register_strategy", "STRATEGIES", "version_id"]


@runtime_checkable
class Strategy(Protocol):
    """Makes candidate versions of a skill from a snapshot, and builds them."""

    name: str

    async def propose(self, base: Skill, snapshot: Snapshot, parent: Version | None) -> Version: ...

    async def apply(self, version: Version, base: Skill) -> tuple[Skill, dict[str, Any]]: ...


#: A classify runner's threshold settings as built (before its first run calibrates
#: them in place), by runner id: a learned bank keeps a fixed bar and recalibrates an auto one.
_SETTINGS: dict[int, tuple[Any, Any]] = {}


def remember_settings(skill: Skill) -> None:
    """Record a classify skill's threshold settings as built; call before it runs."""
    runner = skill.runner
    if isinstance(runner, ClassifyRunner) and id(runner) not in _SETTINGS:
        auto = runner.none_threshold is None
        _SETTINGS[id(runner)] = (None if auto else runner.none_threshold, runner.decisive_margin)


def _settings(runner: ClassifyRunner) -> tuple[Any, Any]:
    return _SETTINGS.get(id(runner), (None, "auto"))


def version_id(target: str, strategy: str, payload: dict[str, Any]) -> str:
    digest = hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:10]
    return f"{target}@{strategy}-{digest}"


class MemoryStrategy:
    """Learn by remembering: the snapshot's examples join the skill's bank.

    Args:
        adopt_after: agreeing records that make a proposed new label a real label
            (adopted at exactly this count, not one before).
        shots: few-shot examples retrieved per request (non-classification skills).
        embedder: for few-shot retrieval; default :func:`~slmgraph.models.default_embedder`.
    """

    name = "memory"

    def __init__(self, *, adopt_after: int = 3, shots: int = 4, embedder: Embedder | None = None) -> None:
        if adopt_after < 1:
            raise ConfigError("learning.adopt_after", "must be >= 1")
        if shots < 1:
            raise ConfigError("learning.shots", "must be >= 1")
        self.adopt_after = adopt_after
        self.shots = shots
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    async def propose(self, base: Skill, snapshot: Snapshot, parent: Version | None) -> Version:
        train = [r for r in snapshot.train if r.teacher_valid]
        if not train:
            raise EmptySnapshotError(f"snapshot {snapshot.id} has no training record for {base.name!r}")
        if is_classifier(base):
            payload = self._classify_payload(base, train)
        elif base.runner is None:
            payload = {"kind": "fewshot", "shots": self.shots,
                       "examples": [[r.request, r.teacher_output] for r in train if r.teacher_output is not None]}
        else:
            raise ConfigError("learning.strategy", f"the memory strategy cannot extend composite skill {base.name!r}; use lora")
        return Version(
            id=version_id(base.name, self.name, payload), target=base.name, strategy=self.name,
            parent=parent.id if parent else None, snapshot=snapshot.id, payload=payload, output_schema=schema_hash(base),
        )

    def _classify_payload(self, base: Skill, train: Sequence[Any]) -> dict[str, Any]:
        runner: ClassifyRunner = base.runner  # type: ignore[assignment]
        votes = Counter(r.label for r in train if r.label and r.label not in runner.labels and r.label != NONE)
        adopted = sorted(lb for lb, n in votes.items() if n >= self.adopt_after)
        pending = {lb: n for lb, n in votes.items() if n < self.adopt_after}
        known = set(runner.labels) | set(adopted)
        examples = [[r.request, r.label] for r in train if r.label in known]
        return {"kind": "classify", "labels": adopted, "pending": pending, "examples": examples,
                "adopt_after": self.adopt_after}

    async def apply(self, version: Version, base: Skill) -> tuple[Skill, dict[str, Any]]:
        payload = version.payload
        if payload.get("kind") == "classify":
            if not is_classifier(base):
                raise ConfigError("learning.version", f"version {version.id} is for a classification skill")
            old: ClassifyRunner = base.runner  # type: ignore[assignment]
            labels = [*sorted(old.labels), *[lb for lb in payload["labels"] if lb not in old.labels]]
            known = getattr(old.bank, "examples", None) or list(zip(old.bank.texts, old.bank.labels))
            examples = [*known, *((t, lb) for t, lb in payload["examples"])]
            bar, margin = _settings(old)
            # A new bank: the trained head (when the skill has one) is refitted on the
            # bank plus the distilled labels, and the thresholds recalibrated on it.
            bank = ExampleBank(examples, labels, cached(old.bank.embedder), **_bank_options(old.bank))
            runner = ClassifyRunner(
                labels=frozenset(labels), bank=bank,
                top_k=old.top_k, none_threshold=bar, none_quantile=old.none_quantile, decisive_margin=margin,
                decisive_precision=old.decisive_precision, propose_with_model=old.propose_with_model,
            )
            return base.clone(runner=runner), {}
        if payload.get("kind") == "fewshot":
            shots = [Example(text, base.output_type.model_validate(out)) for text, out in payload["examples"]]
            return base.clone(runner=FewShotRunner(base, shots, cached(self.embedder), int(payload.get("shots", self.shots)))), {}
        raise ConfigError("learning.version", f"version {version.id} has an unknown memory payload")


class FewShotRunner:
    """Runs a skill with the bank's nearest examples shown as few-shot turns."""

    def __init__(self, base: Skill, examples: Sequence[Example], embedder: Embedder, shots: int) -> None:
        self.base = base
        self.bank = ExampleBank([(str(e.input), str(i)) for i, e in enumerate(examples)], [], embedder,
                                **_bank_options(None))
        self.examples = list(examples)
        self.shots = shots

    async def __call__(self, skill: Skill, data: Any, ctx: Any, node: str) -> Accepted | Rejected:
        text = getattr(data, "text", None) or data.model_dump_json()
        near = await self.bank.nearest(text, self.shots)
        chosen = [self.examples[i] for i, _ in reversed(near)]  # the nearest last, next to the request
        return await run_skill(self.base.clone(examples=[*self.base.examples, *chosen], runner=None), data, ctx, node=node)


def _bank_options(old: Any) -> dict[str, Any]:
    """Keyword arguments for a new bank like ``old`` (``None``: retrieval only)."""
    import inspect

    params = inspect.signature(ExampleBank).parameters
    out: dict[str, Any] = {}
    if "head" in params:
        out["head"] = old is not None and getattr(old, "_head_template", None) is not None
    if "cache" in params:
        found = getattr(old, "cache", None) if old is not None else None
        out["cache"] = found if found is not None else False
    return out


#: Strategies by name, for :func:`apply_version`.
STRATEGIES: dict[str, Strategy] = {"memory": MemoryStrategy()}


def register_strategy(strategy: Strategy) -> None:
    """Make versions made by ``strategy`` servable by name."""
    STRATEGIES[strategy.name] = strategy


async def apply_version(version: Version, base: Skill) -> tuple[Skill, dict[str, Any]]:
    """Build what ``version`` serves, with the strategy that made it."""
    strategy = STRATEGIES.get(version.strategy)
    if strategy is None:
        _lazy_strategies()
        strategy = STRATEGIES.get(version.strategy)
    if strategy is None:
        raise UnknownVersionError("strategy", version.strategy, sorted(STRATEGIES))
    return await strategy.apply(version, base)


def _lazy_strategies() -> None:
    from ._head import HeadStrategy
    from ._lora import LoraStrategy

    STRATEGIES.setdefault("head", HeadStrategy())
    STRATEGIES.setdefault("lora", LoraStrategy())
