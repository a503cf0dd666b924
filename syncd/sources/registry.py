"""Builds the configured sources: one per LowDB file, one per QuestDB table."""

from __future__ import annotations

from syncd.config import Config
from syncd.sources import Source


def build_sources(config: Config) -> list[Source]:
    """Instantiate every source the config names, in config order."""
    sources: list[Source] = []
    return sources
