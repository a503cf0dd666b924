"""Builds the configured sources: one per LowDB file, one per QuestDB table."""

from __future__ import annotations

from syncd.config import Config
from syncd.sources import Source


def build_sources(config: Config) -> list[Source]:
    """Instantiate every source the config names, in config order."""
    sources: list[Source] = []
    if config.questdb is not None:
        from syncd.sources.questdb import build_questdb_sources

        # The signals stream reads PostgreSQL (never writes it) for the nightly reconcile.
        sources.extend(build_questdb_sources(config.questdb, config.postgres.dsn.get_secret_value()))
    return sources
