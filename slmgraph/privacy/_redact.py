"""Reversible redaction: values become placeholders (``<EMAIL_1>``) and come back in replies.

One :class:`Redaction` covers one outgoing call. Numbering runs in order of first
occurrence over the messages, so a conversation that only grows (the escalation
agent's loop) keeps its earlier placeholders from call to call, and the same value
always gets the same placeholder. Placeholder-like text already in the input is
never reused as a placeholder, so it cannot be made to restore someone's data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._detectors import Finding
from ._policy import PrivacyPolicy

__all__ = ["Redaction", "redact_texts", "AuditRecord"]

_PLACEHOLDER = re.compile(r"<\s*([A-Z][A-Z0-9_]*?)_(\d+)\s*>")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the gate did with one call, without any raw value.

    Attributes:
        endpoint: where the call went (or would have gone).
        model: the model name.
        outcome: ``"sent"`` or ``"blocked"``.
        redacted: values replaced by placeholders, by kind.
        allowed: values sent as they are because the policy allows them, by kind.
        blocked: values that stopped the call, by kind.
        placeholders: the placeholders used, e.g. ``("<EMAIL_1>", "<PHONE_1>")``.
    """

    endpoint: str
    model: str
    outcome: str
    redacted: dict[str, int] = field(default_factory=dict)
    allowed: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    placeholders: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint, "model": self.model, "outcome": self.outcome,
            "redacted": dict(self.redacted), "allowed": dict(self.allowed),
            "blocked": dict(self.blocked), "placeholders": list(self.placeholders),
        }


@dataclass(slots=True)
class Redaction:
    """The placeholders of one call and how many values of each kind met each action."""

    mapping: dict[str, str] = field(default_factory=dict)  # placeholder -> raw value
    redacted: Counter = field(default_factory=Counter)
    allowed: Counter = field(default_factory=Counter)
    blocked: Counter = field(default_factory=Counter)

    def restore(self, value: Any) -> Any:
        """``value`` with this call's placeholders put back: in a string, or in every
        string inside JSON-like lists and dicts (keys included)."""
        if not self.mapping:
            return value
        if isinstance(value, str):
            return _PLACEHOLDER.sub(self._back, value)
        if isinstance(value, list):
            return [self.restore(v) for v in value]
        if isinstance(value, dict):
            return {self.restore(k): self.restore(v) for k, v in value.items()}
        return value

    def _back(self, m: re.Match) -> str:
        return self.mapping.get(f"<{m.group(1)}_{m.group(2)}>", m.group(0))


def redact_texts(
    texts: Sequence[str],
    find: Callable[[str], list[Finding]],
    policy: PrivacyPolicy,
) -> tuple[list[str], Redaction]:
    """Apply ``policy`` to the findings in ``texts``.

    Values whose kind is ``redact`` are replaced; ``allow`` and ``block`` values stay
    (the caller refuses the call when ``redaction.blocked`` is not empty).
    """
    taken = {(m.group(1), int(m.group(2))) for t in texts for m in _PLACEHOLDER.finditer(t)}
    red = Redaction()
    by_value: dict[tuple[str, str], str] = {}
    next_n: Counter = Counter()
    out = []
    for text in texts:
        parts, pos = [], 0
        for f in find(text):
            action = policy.action_for(f.kind)
            if action == "allow":
                red.allowed[f.kind] += 1
                continue
            if action == "block":
                red.blocked[f.kind] += 1
                continue
            red.redacted[f.kind] += 1
            label = f.kind.upper()
            ph = by_value.get((label, f.value))
            if ph is None:
                next_n[label] += 1
                while (label, next_n[label]) in taken:
                    next_n[label] += 1
                ph = by_value[(label, f.value)] = f"<{label}_{next_n[label]}>"
                red.mapping[ph] = f.value
            parts += [text[pos:f.start], ph]
            pos = f.end
        parts.append(text[pos:])
        out.append("".join(parts))
    return out, red
