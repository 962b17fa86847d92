"""How a served run's failure reaches a client: an HTTP status, a code and a message.

Nothing unexpected reaches a client as raw text: a storage fault (full disk,
corrupted or locked database, a :class:`~slmgraph.CheckpointError`) is a retryable
503 with a fixed message, since the real one names files on the server, and an
unknown exception is a 500 naming only its type. The server logs both in full.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

from .._errors import (
    CheckpointError,
    EmptyRequestError,
    EscalationError,
    IdempotencyKeyReusedError,
    InvalidModelOutputError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
    RequestTooLargeError,
    SlmGraphError,
    ThreadBusyError,
    UserError,
)

__all__ = ["Failure", "failure_of", "is_storage_fault", "STORAGE_FAILURE", "ServerBusy", "UnknownModel"]


class ServerBusy(Exception):
    """Every run slot is taken and the queue is full."""


class UnknownModel(Exception):
    """The request names a model (graph) this server does not serve."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"the model {name!r} does not exist; this server serves: {', '.join(known)}")


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as a protocol can report it."""

    status: int
    code: str
    message: str


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})


def is_storage_fault(exc: BaseException) -> bool:
    """A fault of the server's own storage (full disk, corrupted or locked database,
    I/O error), not of the request: the client should retry later."""
    if isinstance(exc, CheckpointError | sqlite3.Error):
        return True
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


#: Storage faults are reported without their text: it names files on the server.
STORAGE_FAILURE = Failure(503, "storage_unavailable",
                          "the server could not read or write its run storage, so the request was not "
                          "completed; retry later (the server's log has the details)")


def failure_of(exc: BaseException) -> Failure:
    """Map an exception raised by a run to an HTTP status and an error code.

    Nothing unexpected reaches a client as raw text: storage faults get a fixed
    503 message and unknown exceptions a 500 naming only their type (the server
    logs the rest).
    """
    if is_storage_fault(exc):
        return STORAGE_FAILURE
    if isinstance(exc, ThreadBusyError):
        return Failure(409, "thread_busy", "another request on this conversation is still running; retry when it has finished")
    if isinstance(exc, IdempotencyKeyReusedError):
        return Failure(422, "idempotency_key_reused", str(exc))
    if isinstance(exc, RequestTooLargeError):
        return Failure(413, "context_length_exceeded", str(exc))
    if isinstance(exc, EmptyRequestError):
        return Failure(400, "empty_request", str(exc))
    if isinstance(exc, ModelTimeoutError):
        return Failure(504, "model_timeout", str(exc))
    if isinstance(exc, ModelUnavailableError | ModelNotFoundError):
        return Failure(503, "model_unavailable", str(exc))
    if isinstance(exc, ModelHTTPError):
        return Failure(503 if exc.transient else 502, "model_error", str(exc))
    if isinstance(exc, InvalidModelOutputError | ModelError | EscalationError):
        return Failure(502, "model_error", str(exc))
    if isinstance(exc, SlmGraphError) and not isinstance(exc, UserError):
        return Failure(400, "invalid_request", str(exc))
    if isinstance(exc, ServerBusy):
        return Failure(503, "server_busy", "the server is at its concurrency limit and its queue is full; retry later")
    if isinstance(exc, UnknownModel):
        return Failure(404, "model_not_found", str(exc))
    return Failure(500, "internal_error", f"the graph failed with {type(exc).__name__}; the server's log has the details")
