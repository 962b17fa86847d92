"""Keeping sensitive data on this machine: PII detectors, a per-graph policy, and the
gate that applies it before any call leaves the machine.

    from slmgraph.privacy import PrivacyGate, PrivacyPolicy
    cloud = PrivacyGate(OpenAIModel("gpt-4o-mini"), PrivacyPolicy(action="redact"))

``models_from_config`` puts the gate in front of every model whose endpoint is not
on this machine, from the config's ``[privacy]`` section. See ``docs/privacy.md``.
"""

from .._errors import DetectorUnavailableError, PrivacyBlockedError, PrivacyError
from ._detectors import (
    GROUPS,
    KINDS,
    Detector,
    Finding,
    GazetteerNameDetector,
    NameDetector,
    PatternDetector,
    default_detectors,
    find_pii,
    iban_ok,
    luhn_ok,
)
from ._logs import PiiLogFilter, redact_logs, scrub
from ._gate import PrivacyGate, endpoint_of, is_local_endpoint, is_local_model
from ._policy import Action, PrivacyPolicy
from ._redact import AuditRecord, Redaction, redact_texts

__all__ = [
    "PrivacyGate",
    "PrivacyPolicy",
    "Action",
    "AuditRecord",
    "Redaction",
    "redact_texts",
    "Finding",
    "Detector",
    "NameDetector",
    "PatternDetector",
    "GazetteerNameDetector",
    "default_detectors",
    "find_pii",
    "luhn_ok",
    "iban_ok",
    "KINDS",
    "GROUPS",
    "is_local_endpoint",
    "is_local_model",
    "endpoint_of",
    "PiiLogFilter",
    "redact_logs",
    "scrub",
    "PrivacyError",
    "PrivacyBlockedError",
    "DetectorUnavailableError",
]
