"""The slmgraph exception tree.

Every error slmgraph raises derives from :class:`SlmGraphError` and says what went
wrong and what to do about it::

    SlmGraphError
    ├── UserError                     a developer's mistake, found before any model call
    │   ├── ConfigError               a broken or incomplete configuration (names the field)
    │   ├── UnknownSkillError         a router, rule or config names a skill the graph lacks
    │   ├── MissingDependencyError    an optional extra is not installed (names the extra)
    │   └── StateSchemaError          a node writes a field the graph's state lacks (names it and the mixin)
    ├── RequestError                  the request itself cannot be served
    │   ├── EmptyRequestError         nothing to do
    │   ├── RequestTooLargeError      more tokens than the model's context window
    │   ├── RequestShapeError         not the skill's input shape (names the required fields)
    │   ├── ThreadBusyError           another run holds the thread (rejected, or waited too long)
    │   └── IdempotencyKeyReusedError an idempotency key came back with another request
    ├── ModelError                    a model backend failed
    │   ├── ModelUnavailableError     the server cannot be reached (names the host)
    │   │   ├── IncompleteStreamError the reply stream broke off before its final record
    │   │   └── CircuitOpenError      the endpoint failed repeatedly and is cooling down
    │   ├── ModelTimeoutError         the call took longer than its timeout
    │   ├── ModelNotFoundError        the server does not have the model (says how to get it)
    │   ├── ModelHTTPError            any other HTTP status from the server
    │   │   └── ModelOverloadedError  429 or 503: the server is busy (carries Retry-After)
    │   ├── InvalidModelOutputError   the reply cannot be parsed or fails its schema
    │   └── MalformedResponseError    a 200 whose body is not the protocol (HTML, broken JSON)
    ├── EscalationError               the escalation agent could not finish
    │   ├── StepLimitError            the agent hit its step budget
    │   └── PrivacyError              the privacy gate stopped a call before it left the machine
    │       ├── PrivacyBlockedError   the outgoing text holds PII the policy blocks (kinds, never values)
    │       └── DetectorUnavailableError  a PII detector the policy needs is missing or failed (fail closed)
    ├── CheckpointError               the run's state could not be persisted (disk full, locked)
    └── StorageError                  the shared database cannot be used (names it, password hidden)
        ├── StorageUnavailableError   the server cannot be reached
        ├── StorageAuthError          the server refused the credentials
        └── StorageNotFoundError      the database does not exist

Transient faults (unreachable, timeout, HTTP 429 and 5xx) carry ``transient = True``.

Each family lives in its own module: :mod:`._user` (``UserError``, ``RequestError``),
:mod:`._model` (``ModelError``), :mod:`._run` (``EscalationError``, ``CheckpointError``,
``StorageError``), and the root in :mod:`._root`. Import them from here, or the public
ones from ``slmgraph``.
"""

from __future__ import annotations

from ._model import (
    CircuitOpenError,
    IncompleteStreamError,
    InvalidModelOutputError,
    MalformedResponseError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from ._root import SlmGraphError
from ._run import (
    CheckpointError,
    DetectorUnavailableError,
    EscalationError,
    PrivacyBlockedError,
    PrivacyError,
    StepLimitError,
    StorageAuthError,
    StorageError,
    StorageNotFoundError,
    StorageUnavailableError,
)
from ._user import (
    ConfigError,
    EmptyRequestError,
    IdempotencyKeyReusedError,
    MissingDependencyError,
    RequestError,
    RequestShapeError,
    RequestTooLargeError,
    StateSchemaError,
    ThreadBusyError,
    UnknownSkillError,
    UserError,
)

__all__ = [
    "SlmGraphError",
    "UserError",
    "ConfigError",
    "UnknownSkillError",
    "MissingDependencyError",
    "RequestError",
    "EmptyRequestError",
    "RequestTooLargeError",
    "IdempotencyKeyReusedError",
    "ModelError",
    "ModelUnavailableError",
    "ModelTimeoutError",
    "ModelNotFoundError",
    "ModelHTTPError",
    "InvalidModelOutputError",
    "EscalationError",
    "StepLimitError",
    "ModelOverloadedError",
    "MalformedResponseError",
    "IncompleteStreamError",
    "CircuitOpenError",
    "PrivacyError",
    "PrivacyBlockedError",
    "DetectorUnavailableError",
    "StateSchemaError",
    "RequestShapeError",
    "ThreadBusyError",
    "CheckpointError",
    "StorageError",
    "StorageUnavailableError",
    "StorageAuthError",
    "StorageNotFoundError",
]
