"""The one hardening seam: retry, circuit breaker, concurrency limit and privacy gate.

:func:`harden` puts a model that calls over the network behind, from the inside out,

1. a :class:`~slmgraph.GuardedModel` (a circuit breaker and a concurrency limit,
   shared by every model that calls the same endpoint),
2. a :class:`~slmgraph.RetryingModel` (slmgraph's one retry layer), and
3. a :class:`~slmgraph.privacy.PrivacyGate` when any of its endpoints is not on this
   machine (outermost, so retries resend already-checked messages).

``build_graph`` applies it to every model it is given and ``models_from_config`` to
every model it builds; a model that already has a layer does not get it twice, so
``harden(harden(m))`` is ``harden(m)``. In-process models (the embedded engine, test
doubles) have no transport to retry or break and are returned as they are, or,
when ``limit`` is given, behind that concurrency limit only.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from ._errors import ConfigError
from .models._base import Model
from .models._breaker import CircuitBreaker, ConcurrencyLimit, GuardedModel, endpoint_of
from .models._fallback import FallbackModel
from .models._pool import PooledModel
from .models._retry import RetryingModel, RetryPolicy
from .models._wrapper import WrapperModel, unwrap
from .privacy._detectors import NameDetector
from .privacy._gate import PrivacyGate
from .privacy._policy import PrivacyPolicy

__all__ = ["harden", "harden_models", "Guards"]

#: Breaker and limit by endpoint, shared by the models that call it.
Guards = MutableMapping[str, tuple[CircuitBreaker, ConcurrencyLimit]]


def harden(
    model: Model,
    *,
    retry: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
    limit: ConcurrencyLimit | int | None = None,
    privacy: PrivacyPolicy | None = None,
    name_detector: NameDetector | None = None,
    guards: Guards | None = None,
    key: str = "model",
) -> Model:
    """``model`` behind retry, breaker, concurrency limit and (when it leaves the
    machine) the privacy gate; only the layers it lacks are added.

    Args:
        model: a backend, or a model some layers already wrap. A
            :class:`~slmgraph.FallbackModel` has each member hardened; a
            :class:`~slmgraph.PooledModel` guards each host itself and gets the retry.
        retry: the retry policy (default :class:`~slmgraph.RetryPolicy`: 3 attempts).
        breaker: the breaker to use; by default one per endpoint (5 failures in a
            row open it for 30 s), shared through ``guards``.
        limit: calls in flight per endpoint (a number or a shared
            :class:`~slmgraph.ConcurrencyLimit`); ``None``: no limit.
        privacy: the policy of the gate in front of a model whose endpoint is not on
            this machine. Required for such a model.
        name_detector: for a policy with ``names = "external"``.
        guards: breaker and limit by endpoint, to share them between calls.
        key: the model's binding key, named in errors.

    Raises:
        ConfigError: the model leaves the machine and ``privacy`` is ``None``.
        DetectorUnavailableError: the policy needs a name detector that is missing.
    """
    shared: Guards = {} if guards is None else guards
    out = _protect(model, retry or RetryPolicy(), breaker, limit, shared)
    if _ungated_remote(out):
        if privacy is None:
            raise ConfigError(
                "privacy",
                f"the {'' if key == 'model' else key + ' '}model's endpoint {out.endpoint or out.provider} is not on this machine, so it "
                'needs a privacy policy: pass privacy=PrivacyPolicy(action="redact") (or "block" / "allow"), '
                'add [privacy] with action = "redact" to the config, or point it at a local server',
            )
        out = PrivacyGate(out, privacy, name_detector=name_detector)
    return out


def harden_models(
    models: Mapping[str, Model],
    *,
    privacy: PrivacyPolicy | None = None,
    retry: RetryPolicy | None = None,
    name_detector: NameDetector | None = None,
    guards: Guards | None = None,
) -> dict[str, Model]:
    """:func:`harden` applied to each model of a binding table, with one breaker and
    one limit per endpoint shared between them. A model bound under two keys stays
    one object."""
    shared: Guards = {} if guards is None else guards
    done: dict[int, Model] = {}
    out: dict[str, Model] = {}
    for key, model in models.items():
        if id(model) not in done:
            done[id(model)] = harden(
                model, retry=retry, privacy=privacy, name_detector=name_detector, guards=shared, key=key
            )
        out[key] = done[id(model)]
    return out


def _networked(model: Model) -> bool:
    """Whether calls cross a transport that can fail (anything but in-process)."""
    return not model.local or any(u != "embedded" for u in model.endpoints)


def _has(model: Model, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(m, kinds) for m in unwrap(model))


def _protect_needed(model: Model) -> bool:
    if not _networked(model) or _has(model, (RetryingModel,)):
        return False
    if isinstance(model, FallbackModel):
        return any(_protect_needed(m) for m in model.members)
    return True


def _protect(
    model: Model, retry: RetryPolicy, breaker: CircuitBreaker | None, limit: ConcurrencyLimit | int | None, guards: Guards
) -> Model:
    if not _protect_needed(model):
        if limit is not None and not _networked(model) and not _has(model, (GuardedModel, PooledModel)):
            return GuardedModel(model, limit=_limit(limit))  # an explicit limit holds in-process too
        return model
    if isinstance(model, FallbackModel):
        members = [_protect(m, retry, breaker, limit, guards) for m in model.members]
        return FallbackModel(members, fallback_on=model.fallback_on)
    guarded = model
    if not _has(model, (GuardedModel, PooledModel)):
        if breaker is None or not isinstance(limit, ConcurrencyLimit):
            where = endpoint_of(model)
            if where not in guards:
                guards[where] = (CircuitBreaker(name=where), _limit(limit))
            shared_breaker, shared_limit = guards[where]
            breaker_used = breaker or shared_breaker
            limit_used = limit if isinstance(limit, ConcurrencyLimit) else shared_limit
        else:
            breaker_used, limit_used = breaker, limit
        guarded = GuardedModel(model, breaker=breaker_used, limit=limit_used)
    return RetryingModel(guarded, retry)


def _limit(limit: ConcurrencyLimit | int | None) -> ConcurrencyLimit:
    return limit if isinstance(limit, ConcurrencyLimit) else ConcurrencyLimit(limit)


def _ungated_remote(model: Model) -> bool:
    """Whether some path to a remote endpoint has no privacy gate in front of it."""
    if isinstance(model, PrivacyGate):
        return False
    if isinstance(model, WrapperModel):
        return any(_ungated_remote(m) for m in model.members)
    return not model.local
