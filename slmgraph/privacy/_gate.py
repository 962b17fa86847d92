"""The privacy gate: a model wrapper that checks every call before it leaves the machine.

``PrivacyGate(model, policy)`` is itself a :class:`~slmgraph.models.Model`. Before it
calls the wrapped model it finds PII in every outgoing message and, per the
policy, refuses the call (:class:`~slmgraph.PrivacyBlockedError`), replaces values
by placeholders that it restores in the reply, or lets them through. The check
runs in line, before the call starts: nothing is sent until it has passed. If a
detector the policy needs is missing or fails, the call is refused
(:class:`~slmgraph.DetectorUnavailableError`): the gate fails closed.

Each call leaves an :class:`AuditRecord` (kinds, counts and placeholders; never a
value) in :attr:`PrivacyGate.audit_log`, and on the ``slmgraph.privacy`` logger.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._errors import DetectorUnavailableError, PrivacyBlockedError
from ..models._base import Message, Model, ModelReply, StreamChunk, is_local_endpoint
from ..models._wrapper import WrapperModel
from ._detectors import Detector, Finding, GazetteerNameDetector, NameDetector, default_detectors, find_pii
from ._policy import PrivacyPolicy
from ._redact import AuditRecord, Redaction, redact_texts

__all__ = ["PrivacyGate", "is_local_endpoint", "endpoint_of", "is_local_model"]

logger = logging.getLogger("slmgraph.privacy")

_PARTIAL = re.compile(r"<\s*[A-Z0-9_]*\s*$")


def endpoint_of(model: Model) -> str | None:
    """Where ``model``'s calls go: a URL (the first remote one of a pool),
    ``"embedded"``, or ``None`` when unknown (:attr:`Model.endpoint`)."""
    return model.endpoint


def is_local_model(model: Model) -> bool:
    """Whether calls to ``model`` stay on this machine (:attr:`Model.local`)."""
    return model.local


class PrivacyGate(WrapperModel):
    """Wraps a model so that no call leaves the machine with PII the policy refuses.

    Args:
        inner: the model calls go to when the check passes.
        policy: what to do with each kind of PII.
        name_detector: finds person names; required when ``policy.names ==
            "external"``; with ``"builtin"`` it defaults to the gazetteer detector.
        detectors: replaces the built-in pattern detectors.
        endpoint: where ``inner`` sends calls, for audit records and errors;
            read from the model when not given.
        on_audit: called with each :class:`AuditRecord`.

    Raises:
        DetectorUnavailableError: the policy needs a name detector and none is given.
    """

    def __init__(
        self,
        inner: Model,
        policy: PrivacyPolicy,
        *,
        name_detector: NameDetector | None = None,
        detectors: Sequence[Detector] | None = None,
        endpoint: str | None = None,
        on_audit: Callable[[AuditRecord], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy
        self._where = endpoint or inner.endpoint or inner.provider
        self.detectors: list[Detector] = list(detectors if detectors is not None else default_detectors())
        if policy.names == "builtin" and name_detector is None:
            name_detector = GazetteerNameDetector()
        if policy.names == "external" and name_detector is None:
            raise DetectorUnavailableError("name", "the policy sets names = 'external' but no name_detector was given")
        self.name_detector = name_detector if policy.names != "off" else None
        self.on_audit = on_audit
        self.audit_log: deque[AuditRecord] = deque(maxlen=256)

    @property
    def endpoint(self) -> str:
        """Where calls go, as audit records and errors name it."""
        return self._where

    # -- checking -----------------------------------------------------------------------

    def find(self, text: str) -> list[Finding]:
        """The PII the gate sees in ``text``.

        Raises:
            DetectorUnavailableError: a detector the policy needs cannot run.
        """
        detectors = list(self.detectors)
        if self.name_detector is not None:
            why = _unavailable(self.name_detector)
            if why:
                raise DetectorUnavailableError("name", why)
            detectors.append(self.name_detector)
        try:
            return find_pii(text, detectors)
        except DetectorUnavailableError:
            raise
        except Exception as exc:  # a broken detector must not let text through unchecked
            raise DetectorUnavailableError("pii", f"a detector failed with {type(exc).__name__}") from None

    def check(self, messages: Sequence[Message]) -> tuple[list[Message], Redaction]:
        """The messages as they may leave, and their redaction; refuses blocked PII.

        Raises:
            PrivacyBlockedError, DetectorUnavailableError: nothing may be sent.
        """
        texts, red = redact_texts([m.content for m in messages], self.find, self.policy)
        record = AuditRecord(
            endpoint=self.endpoint, model=self.name, outcome="blocked" if red.blocked else "sent",
            redacted=dict(red.redacted), allowed=dict(red.allowed), blocked=dict(red.blocked),
            placeholders=tuple(red.mapping),
        )
        self._audit(record)
        if red.blocked:
            raise PrivacyBlockedError(dict(red.blocked), self.endpoint)
        return [Message(m.role, t) for m, t in zip(messages, texts)], red

    def _audit(self, record: AuditRecord) -> None:
        self.audit_log.append(record)
        if record.redacted or record.allowed or record.blocked:
            logger.info(
                "privacy gate %s call to %s: redacted=%s allowed=%s blocked=%s",
                record.outcome, record.endpoint, record.redacted, record.allowed, record.blocked,
                extra={"privacy_audit": record.to_dict()},
            )
        if self.on_audit is not None:
            self.on_audit(record)

    # -- the Model seam -----------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as it will be sent (placeholders in place of values)."""
        (sent,), _ = redact_texts([text], self.find, self.policy)
        return self.inner.count_tokens(sent)

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        outgoing, red = self.check(messages)
        reply = await self.inner.complete(outgoing, schema=schema, settings=settings)
        return _restored(reply, red)

    async def stream(self, messages, *, schema=None, settings=None):
        """Streams the reply with placeholders restored; a placeholder split across
        chunks is held back until it is complete."""
        outgoing, red = self.check(messages)
        pending = ""
        async for chunk in self.inner.stream(outgoing, schema=schema, settings=settings):
            pending += chunk.delta
            if chunk.reply is not None:
                yield StreamChunk(delta=red.restore(pending), reply=_restored(chunk.reply, red))
                pending = ""
                continue
            cut = pending.rfind("<")
            if cut >= 0 and len(pending) - cut < 48 and _PARTIAL.match(pending, cut):
                ready, pending = pending[:cut], pending[cut:]
            else:
                ready, pending = pending, ""
            if ready:
                yield StreamChunk(delta=red.restore(ready))
        if pending:
            yield StreamChunk(delta=red.restore(pending))

    def __repr__(self) -> str:
        return f"PrivacyGate({self.inner!r}, action={self.policy.action!r}, endpoint={self.endpoint!r})"


def _unavailable(detector: Any) -> str | None:
    check = getattr(detector, "available", None)
    if check is None:
        return None
    try:
        return check()
    except Exception as exc:
        return f"its availability check raised {type(exc).__name__}"


def _restored(reply: ModelReply, red: Redaction) -> ModelReply:
    if not red.mapping:
        return reply
    return dataclasses.replace(reply, text=red.restore(reply.text), parsed=red.restore(reply.parsed))
