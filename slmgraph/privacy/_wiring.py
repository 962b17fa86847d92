"""Putting the gate in front of every model that leaves the machine, from a config."""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import ConfigError
from ..models._base import Model
from ._detectors import NameDetector
from ._gate import PrivacyGate, endpoint_of, is_local_model
from ._policy import PrivacyPolicy

__all__ = ["gate_remote_models"]


def gate_remote_models(
    models: Mapping[str, Model],
    policy: PrivacyPolicy | None,
    *,
    name_detector: NameDetector | None = None,
) -> dict[str, Model]:
    """``models`` with each non-local one wrapped in a :class:`PrivacyGate`.

    Local models (embedded, loopback) are returned as they are. The gate is the
    outermost wrapper, so retries resend the already-checked messages.

    Raises:
        ConfigError: a model's endpoint is remote and ``policy`` is ``None``
            (caught here too when the endpoint came from the environment at build time).
        DetectorUnavailableError: the policy needs a name detector that is missing.
    """
    out: dict[str, Model] = {}
    for key, model in models.items():
        if is_local_model(model) or isinstance(model, PrivacyGate):
            out[key] = model
            continue
        if policy is None:
            raise ConfigError(
                "privacy",
                f"the {key} model's endpoint {endpoint_of(model) or model.provider} is not on this machine, "
                'so it needs a privacy policy: add [privacy] with action = "redact", "block" or "allow"',
            )
        out[key] = PrivacyGate(model, policy, name_detector=name_detector)
    return out
