"""Lazy package exports (PEP 562): a name's module is imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, which exports each name of
    ``exports`` from the module it maps to (absolute, or relative to ``package``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        vars(importlib.import_module(package))[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__


def numpy_for(what: str) -> Any:
    """numpy, imported on first use; a typed error naming the extra when it is missing.

    Raises:
        MissingDependencyError: numpy is not installed (it comes with ``embedded``).
    """
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every extra that embeds
        from ._errors import MissingDependencyError

        raise MissingDependencyError(f"numpy (needed by {what})", "embedded") from None
    return numpy
