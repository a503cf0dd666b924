"""syncd's version and build: one source for `syncd --version`, `syncd_build_info` and `/status`."""

from __future__ import annotations

import importlib.metadata
import platform

VERSION = importlib.metadata.version("syncd")
"""The installed distribution's version (pyproject.toml's `version`)."""

# Distributions whose versions a support bundle and `syncd --version --verbose` report.
_COMPONENTS = ("asyncpg", "psycopg", "aiohttp", "watchfiles", "pydantic", "click", "structlog")


def build_info() -> dict[str, str]:
    """syncd's version and the interpreter it runs on (the labels of syncd_build_info)."""
    return {"version": VERSION, "python": platform.python_version(), "implementation": platform.python_implementation()}


def component_versions() -> dict[str, str]:
    """Versions of the libraries syncd talks to the world through (`-` when one is absent)."""
    versions: dict[str, str] = {}
    for name in _COMPONENTS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions
