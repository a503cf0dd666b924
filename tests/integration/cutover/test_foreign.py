"""The stale-writer guard: a LowDB-strategy process that kept running during pg-primary rewrites the
file from its old in-memory copy. The reverse path detects it at once, keeps the foreign records in
quarantine, and puts PostgreSQL's state back into the file; PostgreSQL itself is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from syncd import metrics
from syncd import quarantine as q
from syncd.config import LowdbSettings
from syncd.cutover import reverse, transitions
from syncd.cutover.foreign import REASON
from syncd.cutover.verify import verify_file
from tests.integration.conftest import eventually
from tests.integration.cutover.conftest import CATEGORIES, item
from tests.lowdb_files import write_v7

INSERT_ITEM = """INSERT INTO workspace.workspace_items (id, title, category, created_at)
                 VALUES ($1, 'from the api', 'dashboard', now())"""


@asynccontextmanager
async def reverse_path(pool: asyncpg.Pool, settings: LowdbSettings) -> AsyncIterator[reverse.ReverseSync]:
    """The daemon's reverse path of `settings`, running until the block ends."""
    runner = reverse.ReverseSync(settings, pool, poll=0.02)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        await runner.stop(task, 5.0)


def items_in_file(settings: LowdbSettings) -> dict[str, dict[str, Any]]:
    """The file's items by id."""
    return {r["id"]: r for r in orjson.loads(settings.path.read_bytes())["items"]}


async def clean(pool: asyncpg.Pool, settings: LowdbSettings) -> bool:
    """True when the file equals PostgreSQL."""
    async with pool.acquire() as conn:
        return (await verify_file(conn, settings)).clean


async def test_a_stale_writer_is_held_and_postgresqls_state_restored(
    pool: asyncpg.Pool, mirrored: LowdbSettings
) -> None:
    """Its write erased a row the reverse path had added, edited one and added one: all three are
    held, the file gets PostgreSQL's state back, PostgreSQL keeps its own, the metric counts it."""
    stale = orjson.loads(mirrored.path.read_bytes())  # the copy a LowDB-strategy process keeps in memory
    await transitions.promote(pool, mirrored, actor="tester@host", max_lag=1.0)
    counter = metrics.FOREIGN_WRITES.labels("workspace")
    before = counter._value.get()
    async with reverse_path(pool, mirrored):
        await pool.execute(INSERT_ITEM, "from-pg")
        await eventually(lambda: _true("from-pg" in items_in_file(mirrored)), what="reverse path wrote from-pg")
        stale["items"][0]["title"] = "edited by the stale process"
        stale["items"].append(item("stale-new"))
        write_v7(mirrored.path, stale)
        await eventually(lambda: _held(pool, 3), what="three foreign records held")
        await eventually(lambda: clean(pool, mirrored), what="PostgreSQL's state back in the file")
    assert counter._value.get() == before + 1
    held = {e.key: e for e in await q.list_entries(pool, stream="workspace")}
    assert set(held) == {"1", "stale-new", "from-pg"}
    assert {e.reason for e in held.values()} == {REASON}
    assert held["1"].raw["title"] == "edited by the stale process"
    assert held["from-pg"].raw == {"foreign_delete": "from-pg"}
    file = items_in_file(mirrored)
    assert file["1"]["title"] == "t"
    assert "stale-new" not in file
    assert "from-pg" in file
    assert await pool.fetchval("SELECT title FROM workspace.workspace_items WHERE id = '1'") == "t"
    assert await pool.fetchval("SELECT count(*) FROM workspace.workspace_items WHERE id = 'stale-new'") == 0


async def test_a_foreign_write_while_no_reverse_path_ran_is_found_at_its_start(
    pool: asyncpg.Pool, mirrored: LowdbSettings
) -> None:
    """The first pass compares the whole file with PostgreSQL (the daemon was down meanwhile)."""
    await transitions.promote(pool, mirrored, actor="tester@host", max_lag=1.0)
    write_v7(mirrored.path, {"items": [item("1", "edited while syncd was down")], "categories": CATEGORIES})
    async with reverse_path(pool, mirrored) as runner:
        await eventually(lambda: _true(runner.state.caught_up), what="first pass")
    assert await clean(pool, mirrored)
    held = await q.list_entries(pool, stream="workspace")
    # The item edited, and the two the foreign version dropped.
    assert sorted(e.key or "" for e in held) == [
        "0c160b10-4aed-4bca-9f96-704f31d3ccf9",
        "1",
        "item-1762600000000-k3j9x2a",
    ]


async def test_the_reverse_paths_own_writes_are_not_foreign(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """Many passes, each writing the file: nothing is held, nothing counted."""
    await transitions.promote(pool, mirrored, actor="tester@host", max_lag=1.0)
    counter = metrics.FOREIGN_WRITES.labels("workspace")
    before = counter._value.get()
    async with reverse_path(pool, mirrored):
        for i in range(5):
            await pool.execute(INSERT_ITEM, f"k{i}")
            await eventually(lambda i=i: _true(f"k{i}" in items_in_file(mirrored)), what=f"k{i} written back")
    assert counter._value.get() == before
    assert await q.list_entries(pool, stream="workspace") == []


async def _true(value: bool) -> bool:
    return value


async def _held(pool: asyncpg.Pool, n: int) -> bool:
    return len(await q.list_entries(pool, stream="workspace")) == n
