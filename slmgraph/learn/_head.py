"""The ``"head"`` strategy: placeholder until the routing issue's trained head lands.

Until then :class:`HeadStrategy` is the classify bank with the distilled labels
and thresholds recalibrated on the new bank (see the module docstring of
:mod:`slmgraph.learn._strategies`): the memory strategy with every threshold
forced to recalibrate.
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
