"""A model backend failed: unreachable, slow, missing, refusing, or talking nonsense.

Transient faults (unreachable, timeout, HTTP 429 and 5xx, a malformed 200) carry
``transient = True``; the retry layer reads it.
"""

from __future__ import annotations

from ._root import SlmGraphError

__all__ = [
    "ModelError",
    "ModelUnavailableError",
    "IncompleteStreamError",
    "CircuitOpenError",
    "ModelTimeoutError",
    "ModelNotFoundError",
    "ModelHTTPError",
    "ModelOverloadedError",
    "InvalidModelOutputError",
    "MalformedResponseError",
]


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
