"""The slmgraph exception tree.

Every error slmgraph raises derives from :class:`SlmGraphError` and says what went
wrong and what to do about it::

    SlmGraphError
    ├── UserError                     a developer's mistake, found before any model call
    │   ├── ConfigError               a broken or incomplete configuration (names the field)
    │   ├── UnknownSkillError         a router, rule or config names a skill the graph lacks
    │   └── MissingDependencyError    an optional extra is not installed (names the extra)
    ├── RequestError                  the request itself cannot be served
    │   ├── EmptyRequestError         nothing to do
    │   ├── RequestTooLargeError      more tokens than the model's context window
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
"""

from __future__ import annotations

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
]


class SlmGraphError(Exception):
    """Root of every error slmgraph raises.

    Attributes:
        transient: a retry may succeed (unreachable, timeout, 429, 5xx).
        ledger: when raised inside a graph node, the ledger entries of the model
            calls that node made before failing (they cost tokens too).
        thread_id, run_id: when a graph run failed with it, which run that was
            (resume it with ``graph.aresume(thread_id)``).
    """

    transient: bool = False
    ledger: list[dict] = []
    thread_id: str | None = None
    run_id: str | None = None


class UserError(SlmGraphError):
    """A mistake in how slmgraph is used or configured."""


class ConfigError(UserError):
    """A configuration value is missing or invalid.

    Attributes:
        field: dotted name of the offending setting, e.g. ``"large.base_url"``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config field {field!r}: {problem}")


class UnknownSkillError(UserError):
    """A name refers to a skill that the graph does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"unknown skill {name!r}; this graph has: {', '.join(sorted(known)) or '(none)'}"
        )


class MissingDependencyError(UserError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str, hint: str = "") -> None:
        self.extra = extra
        msg = f"{what} is not installed; install it with `pip install 'slmgraph[{extra}]'`"
        super().__init__(msg + (f" {hint}" if hint else ""))


class RequestError(SlmGraphError):
    """The request cannot be served as given."""


class EmptyRequestError(RequestError):
    """The request has no content."""

    def __init__(self) -> None:
        super().__init__("the request is empty; send some text for the graph to work on")


class IdempotencyKeyReusedError(RequestError):
    """An idempotency key came back with a request other than the one it was first
    sent with; a retry must repeat its request exactly.

    Attributes:
        run_id: the run recorded under the key.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            "this idempotency key was first used with another request (run "
            f"{run_id}); send a retry with the same request, or a new key for a new request"
        )


class RequestTooLargeError(RequestError):
    """The request does not fit the model's context window.

    slmgraph counts tokens itself and refuses such a request instead of letting the
    server truncate it silently.
    """

    def __init__(self, tokens: int, limit: int, model: str) -> None:
        self.tokens = tokens
        self.limit = limit
        self.model = model
        super().__init__(
            f"the request is {tokens} tokens but {model!r} takes at most {limit} "
            "for input; split it into smaller requests, or bind a model with a larger "
            "context window (num_ctx / n_ctx)"
        )


class ModelError(SlmGraphError):
    """A model backend failed.

    Attributes:
        model: the model name the call was for.
        provider: which backend raised (``"ollama"``, ``"openai"``, ...).
    """

    def __init__(self, message: str, *, model: str = "", provider: str = "") -> None:
        self.model = model
        self.provider = provider
        super().__init__(message)


class ModelUnavailableError(ModelError):
    """The model server could not be reached."""

    transient = True


class ModelTimeoutError(ModelError):
    """The model call exceeded its timeout."""

    transient = True


class ModelNotFoundError(ModelError):
    """The server answered but does not have the requested model."""


class ModelHTTPError(ModelError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, model: str = "", provider: str = "") -> None:
        self.status_code = status_code
        super().__init__(message, model=model, provider=provider)
        self.transient = status_code == 429 or status_code >= 500


class InvalidModelOutputError(ModelError):
    """The model's reply could not be parsed or does not match the expected schema.

    Attributes:
        text: the raw reply, kept so the caller can show or repair it.
    """

    def __init__(self, message: str, *, text: str = "", model: str = "", provider: str = "") -> None:
        self.text = text
        super().__init__(message, model=model, provider=provider)


class EscalationError(SlmGraphError):
    """The escalation agent could not produce an answer."""


class StepLimitError(EscalationError):
    """The escalation agent used its whole step budget without finishing."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        super().__init__(
            f"the escalation agent used all {steps} steps without a final answer; "
            "raise max_steps or split the request"
        )


class ModelOverloadedError(ModelHTTPError):
    """The server is busy (HTTP 429 or 503); retried, after ``Retry-After`` when given.

    Attributes:
        retry_after: seconds the server asked us to wait, or ``None``.
    """

    def __init__(
        self, message: str, *, status_code: int, retry_after: float | None = None, model: str = "", provider: str = ""
    ) -> None:
        super().__init__(message, status_code=status_code, model=model, provider=provider)
        self.retry_after = retry_after
        self.transient = True


class MalformedResponseError(ModelError):
    """The server answered 200 with a body that is not its protocol (an HTML error page
    from a proxy, JSON cut short). Retried at most once, and never parsed into state."""

    transient = True


class IncompleteStreamError(ModelUnavailableError):
    """A streamed reply ended without its final record (Ollama's ``done``, OpenAI's
    ``finish_reason`` / ``[DONE]``). The partial text is discarded, never returned."""


class CircuitOpenError(ModelUnavailableError):
    """The endpoint failed repeatedly and is cooling down; calls fail at once.

    Not transient: the retry layer does not wait out a cooldown, a fallback takes over.

    Attributes:
        endpoint: the URL or name of the endpoint.
        retry_in: seconds until the breaker lets a probe through.
    """

    transient = False

    def __init__(self, endpoint: str, retry_in: float, *, model: str = "", provider: str = "") -> None:
        self.endpoint = endpoint
        self.retry_in = retry_in
        super().__init__(
            f"{endpoint} failed repeatedly and is taken out of rotation for another "
            f"{retry_in:.1f} s; configure a fallback model or another host, or check the server",
            model=model,
            provider=provider,
        )


class PrivacyError(EscalationError):
    """The privacy gate refused to let a call leave the machine.

    It is an :class:`EscalationError` because the gate guards escalation targets: a
    graph ends such a run as ``escalation_failed`` with the draft kept. Messages name
    PII kinds and counts, never the values.
    """


class PrivacyBlockedError(PrivacyError):
    """The outgoing messages hold PII of a kind the policy blocks.

    Attributes:
        counts: findings by kind, e.g. ``{"email": 1, "card": 2}``.
        endpoint: where the call would have gone.
    """

    def __init__(self, counts: dict[str, int], endpoint: str) -> None:
        self.counts = dict(counts)
        self.endpoint = endpoint
        found = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        super().__init__(
            f"the privacy policy blocks sending {found} to {endpoint}; nothing was sent. "
            "Remove the data, set the policy for these kinds to 'redact', or keep the "
            "request on local models"
        )


class DetectorUnavailableError(PrivacyError):
    """A PII detector that the policy requires is not available, so nothing is sent.

    Attributes:
        detector: the detector's name (``"name"``, ...).
    """

    def __init__(self, detector: str, why: str) -> None:
        self.detector = detector
        super().__init__(
            f"the privacy policy needs the {detector!r} detector, which is unavailable ({why}); "
            "the call was not made (fail closed). Provide the detector, or set "
            "privacy.names = 'off' if names need not be detected"
        )



__all__ += ["ThreadBusyError", "CheckpointError"]


class ThreadBusyError(RequestError):
    """Another run holds the conversation thread, in this process or another one
    sharing the SQLite file; two runs on one thread never interleave.

    Attributes:
        thread_id: the busy thread.
        holder: the run id holding it, when known.
    """

    transient = True

    def __init__(self, thread_id: str, holder: str = "", *, waited_s: float | None = None) -> None:
        self.thread_id = thread_id
        self.holder = holder
        by = f" by run {holder!r}" if holder else ""
        how = f"still busy after waiting {waited_s:.1f}s" if waited_s is not None else "busy"
        super().__init__(
            f"thread {thread_id!r} is {how}: another run holds it{by}; retry when that run "
            "has finished, or use a new thread id"
        )


class CheckpointError(SlmGraphError):
    """The checkpointer failed to persist the run's state, so the run stopped.

    The run is marked ``failed`` in the runs table; once the fault is cleared
    (free disk space, release the lock), ``SLMGraph.aresume(thread_id)`` or
    ``SLMGraph.arecover(include_failed=True)`` finishes it from its last good checkpoint.

    Attributes:
        thread_id: the thread whose state could not be written.
        cause: the underlying exception's text.
    """

    def __init__(self, thread_id: str, cause: str) -> None:
        self.thread_id = thread_id
        self.cause = cause
        what = f"the state of thread {thread_id!r}" if thread_id else "the run's record"
        super().__init__(
            f"could not persist {what} ({cause}); the run stopped "
            "and is marked failed; fix the storage (disk space, lock, permissions) and resume it "
            "with its thread id"
        )


__all__ += ["StorageError", "StorageUnavailableError", "StorageAuthError", "StorageNotFoundError"]


class StorageError(SlmGraphError):
    """The shared database (PostgreSQL) named by ``checkpoint`` cannot be used.

    Raised when the store is opened, before any run is accepted, so nothing is lost.
    Messages show the DSN with its password hidden.

    Attributes:
        dsn: the connection string, password hidden.
    """

    def __init__(self, dsn: str, problem: str) -> None:
        self.dsn = dsn
        super().__init__(f"the checkpoint database {dsn}: {problem}")


class StorageUnavailableError(StorageError):
    """The database server cannot be reached (refused, unknown host, timed out)."""

    transient = True


class StorageAuthError(StorageError):
    """The database server refused the user name or password."""


class StorageNotFoundError(StorageError):
    """The server answers, but the database named in the DSN does not exist."""
