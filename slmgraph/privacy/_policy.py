"""The per-graph privacy policy: what to do with each kind of PII before egress.

In a TOML config::

    [privacy]
    action = "redact"              # "block" | "redact" | "allow": the default for every kind
    names = "builtin"              # "off" | "builtin" | "external" (a detector passed in code)
    kinds = { card = "block", national_id = "block", ip = "allow" }   # per kind or group
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._detectors import GROUPS, KINDS

__all__ = ["Action", "PrivacyPolicy"]

#: ``block``: refuse the call; ``redact``: replace values by placeholders such as
#: ``<EMAIL_1>`` and restore them in the reply; ``allow``: send as is (audited).
Action = Literal["block", "redact", "allow"]


class PrivacyPolicy(BaseModel):
    """What the privacy gate does with each kind of PII in a call that leaves the machine.

    Attributes:
        action: the default for every kind.
        kinds: overrides by kind (``"email"``, ``"card"``, ...) or group
            (``"national_id"``, ``"ip"``); a kind's own entry beats its group's.
        names: how person names are found: ``"off"`` (not looked for),
            ``"builtin"`` (the gazetteer detector), ``"external"`` (a
            :class:`~slmgraph.privacy.NameDetector` must be given in code; without
            one the gate fails closed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action = "redact"
    kinds: dict[str, Action] = Field(default_factory=dict)
    names: Literal["off", "builtin", "external"] = "off"

    @field_validator("kinds")
    @classmethod
    def _known(cls, v: dict[str, Action]) -> dict[str, Action]:
        for key in v:
            if key not in KINDS and key not in GROUPS:
                raise ValueError(f"unknown PII kind {key!r}; known: {', '.join((*KINDS, *GROUPS))}")
        return v

    def action_for(self, kind: str) -> Action:
        if kind in self.kinds:
            return self.kinds[kind]
        for group, members in GROUPS.items():
            if kind in members and group in self.kinds:
                return self.kinds[group]
        return self.action
