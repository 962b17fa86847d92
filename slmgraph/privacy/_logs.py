"""Redacting log records, for the logs that libraries write on their own.

Some dependencies log request data at DEBUG: aiosqlite logs every SQL statement
with its parameters, so each checkpoint write (the request included) reaches the
log. :class:`PiiLogFilter` rewrites a record's message and traceback with every
PII value found replaced by its kind (``<EMAIL>``), before any handler formats it.
Attach it to handlers (a filter on a logger does not see records propagated from
child loggers); :func:`redact_logs` does that for the root logger's handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._detectors import Detector, GazetteerNameDetector, default_detectors, find_pii
from ._policy import PrivacyPolicy

__all__ = ["PiiLogFilter", "redact_logs", "scrub"]


def scrub(text: str, detectors: Sequence[Detector]) -> str:
    """``text`` with each finding replaced by ``<KIND>`` (one-way; nothing to restore)."""
    out, pos = [], 0
    for f in find_pii(text, detectors):
        out += [text[pos:f.start], f"<{f.kind.upper()}>"]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


class PiiLogFilter(logging.Filter):
    """A handler filter that removes PII from every record it passes.

    Kinds the policy allows are left as they are; every other kind is replaced.

    Args:
        policy: which kinds to keep (``allow``); ``None`` scrubs every kind.
    """

    def __init__(self, policy: PrivacyPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy or PrivacyPolicy()
        self.detectors: list[Detector] = [
            d for d in default_detectors() if any(self.policy.action_for(k) != "allow" for k in d.kinds)
        ]
        if self.policy.names == "builtin":
            self.detectors.append(GazetteerNameDetector())

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to the handler's own error path
            return True
        record.msg, record.args = scrub(message, self.detectors), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.detectors)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.detectors)
        return True


def redact_logs(policy: PrivacyPolicy | None = None, handlers: Sequence[logging.Handler] | None = None) -> PiiLogFilter:
    """Attach one :class:`PiiLogFilter` to ``handlers`` (default: the root logger's)."""
    flt = PiiLogFilter(policy)
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, PiiLogFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
