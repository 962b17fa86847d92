"""A run that could not finish: the escalation agent gave up, the privacy gate
stopped a call, or the run's state could not be stored."""

from __future__ import annotations

from ._root import SlmGraphError

__all__ = [
    "EscalationError",
    "StepLimitError",
    "PrivacyError",
    "PrivacyBlockedError",
    "DetectorUnavailableError",
    "CheckpointError",
    "StorageError",
    "StorageUnavailableError",
    "StorageAuthError",
    "StorageNotFoundError",
]


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
