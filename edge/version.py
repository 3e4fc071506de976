"""edgeport's version, read once from the installed distribution's metadata (the one source:
pyproject.toml's `version`)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def version() -> str:
    """'0.4.0', or '0+unknown' when edgeport runs from a checkout that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("edgeport")
    except metadata.PackageNotFoundError:
        return "0+unknown"
