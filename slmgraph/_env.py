"""Checks of environment variables that a dependency reads by itself.

The ``ollama`` package builds a default client from ``OLLAMA_HOST`` when it is
imported, so a malformed value would fail the import with a bare ``ValueError``.
:func:`check_ollama_host` finds that first and says which variable to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from ._errors import ConfigError

__all__ = ["check_ollama_host"]


def check_ollama_host(env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` naming ``OLLAMA_HOST`` when the ``ollama`` package
    could not parse it (a bad port, a broken IPv6 address, ...)."""
    value = (os.environ if env is None else env).get("OLLAMA_HOST", "").strip()
    if not value:
        return
    scheme, sep, rest = value.partition("://")
    try:
        urlsplit(f"{scheme}://{rest}" if sep else f"http://{value}").port  # noqa: B018 - raises when malformed
    except ValueError as exc:
        raise ConfigError(
            "OLLAMA_HOST",
            f"{value!r} is not a host URL ({exc}); set it to http://HOST:PORT, e.g. http://127.0.0.1:11434, or unset it",
        ) from None
