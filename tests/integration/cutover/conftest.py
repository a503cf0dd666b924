"""A workspace LowDB file mirrored into the test database by the real source and sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncd.config import LowdbSettings
from syncd.lowdb.source import LowdbSource
from syncd.sink.postgres import PostgresSink
from tests.integration.conftest import eventually, running
from tests.lowdb_files import CATEGORIES, item, write_v7

__all__ = ["item"]


def write_file(path: Path, items: list[dict[str, Any]], **top: Any) -> None:
    """Write the file the way lowdb@7 does (2-space JSON to a temp file, renamed over)."""
    write_v7(path, {"items": items, "categories": CATEGORIES, **top})


async def mirror(pool: asyncpg.Pool, sink: PostgresSink, settings: LowdbSettings) -> None:
    """Run the forward stream until PostgreSQL has applied the file's current version."""
    source = LowdbSource(settings, pool=pool)
    async with running(source, sink) as runner:

        async def applied() -> bool:
            return runner.state.caught_up and source.caught_up

        await eventually(applied, what="file applied")


@pytest.fixture
async def mirrored(pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path) -> LowdbSettings:
    """A workspace file with three items (the three id formats), applied to PostgreSQL."""
    settings = LowdbSettings(name="workspace", path=tmp_path / "library.json", layout="workspace")
    items = [item("1"), item("0c160b10-4aed-4bca-9f96-704f31d3ccf9"), item("item-1762600000000-k3j9x2a")]
    write_file(settings.path, items, schemaVersion=2)
    await mirror(pool, sink, settings)
    return settings
