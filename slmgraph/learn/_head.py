"""The ``"head"`` strategy: the classify skill's trained head, refitted with the distilled labels.

A candidate is a new example bank (the skill's examples plus the curated ones,
adopted labels included); the bank fits its :class:`~slmgraph.skills.LinearHead`
on it (the routing issue's calibrated logistic regression), and every threshold,
the "none fits" bar and the decisive lead, is recalibrated on the new bank, even
where the skill fixed them. (The memory strategy builds the same bank but keeps a
threshold the skill fixed.)
"""

from __future__ import annotations

from typing import Any

from ._strategies import MemoryStrategy, _SETTINGS

__all__ = ["HeadStrategy"]


class HeadStrategy(MemoryStrategy):
    """The bank plus distilled labels, with the "none fits" bar and the decisive
    lead recalibrated on the new bank (leave-one-out), whatever the skill fixed."""

    name = "head"

    async def apply(self, version: Any, base: Any) -> tuple[Any, dict[str, Any]]:
        runner = base.runner
        saved = _SETTINGS.get(id(runner))
        _SETTINGS[id(runner)] = (None, "auto")
        try:
            return await super().apply(version, base)
        finally:
            if saved is None:
                _SETTINGS.pop(id(runner), None)
            else:
                _SETTINGS[id(runner)] = saved
