"""The reverse path: PostgreSQL changes written back into the LowDB file in lowdb's own format."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import orjson

from syncd.config import LowdbSettings
from syncd.cutover import reverse, transitions
from syncd.cutover.verify import verify_file
from syncd.sink.postgres import PostgresSink
from tests.integration.conftest import eventually
from tests.integration.cutover.conftest import mirror

ACTOR = "tester@host"
INSERT_ITEM = """INSERT INTO workspace.workspace_items (id, title, description, category, priority, status, created_at)
                 VALUES ($1, 'new', 'd', 'dashboard', 'low', 'new', '2025-11-01T10:00:00Z')"""


async def promoted(pool: asyncpg.Pool, settings: LowdbSettings) -> None:
    """Promote the mirrored file."""
    await transitions.promote(pool, settings, actor=ACTOR, max_lag=1.0)


async def flush(pool: asyncpg.Pool, settings: LowdbSettings) -> int:
    """One reverse pass."""
    async with pool.acquire() as conn:
        return await reverse.flush(conn, settings)


async def test_inserts_updates_deletes_reach_the_file_in_lowdb_format(
    pool: asyncpg.Pool, mirrored: LowdbSettings
) -> None:
    """Order kept, updates in place, inserts appended, deletes removed, other top-level keys kept."""
    await promoted(pool, mirrored)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE workspace.workspace_items SET status = 'review' WHERE id = '1'")
        await conn.execute("DELETE FROM workspace.workspace_items WHERE id = '0c160b10-4aed-4bca-9f96-704f31d3ccf9'")
        await conn.execute(INSERT_ITEM, "item-1762700000000-aaaaaaa")
    assert await flush(pool, mirrored) == 3
    data = mirrored.path.read_bytes()
    document = orjson.loads(data)
    assert data == orjson.dumps(document, option=orjson.OPT_INDENT_2)
    assert document["schemaVersion"] == 2
    assert [(r["id"], r["status"]) for r in document["items"]] == [
        ("1", "review"),
        ("item-1762600000000-k3j9x2a", "new"),
        ("item-1762700000000-aaaaaaa", "new"),
    ]
    assert document["items"][2]["createdAt"] == "2025-11-01T10:00:00.000Z"
    async with pool.acquire() as conn:
        assert (await verify_file(conn, mirrored)).clean
    assert await flush(pool, mirrored) == 0


async def test_syncd_origin_is_not_echoed(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """A change tagged with syncd's own origin is skipped; the file keeps its bytes."""
    await promoted(pool, mirrored)
    before = mirrored.path.read_bytes()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'syncd'")
        await conn.execute("UPDATE workspace.workspace_items SET title = 'echo' WHERE id = '1'")
    assert await flush(pool, mirrored) == 0
    assert mirrored.path.read_bytes() == before


async def test_a_slow_transaction_is_never_skipped(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """T1 opens first, T2 commits first: the pass in between writes neither, the next one both."""
    await promoted(pool, mirrored)
    slow = await pool.acquire()
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(INSERT_ITEM, "slow")
        await pool.execute(INSERT_ITEM, "fast")
        assert await flush(pool, mirrored) == 0
        await tx.commit()
    finally:
        await pool.release(slow)
    assert await flush(pool, mirrored) == 2
    ids = {r["id"] for r in orjson.loads(mirrored.path.read_bytes())["items"]}
    assert {"slow", "fast"} <= ids


async def test_documentation_counters_follow_integer_ids(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """An id PostgreSQL hands out moves lowdb's counter past it, so a rolled-back app never reuses it."""
    settings = LowdbSettings(name="documentation", path=tmp_path / "db.json", layout="documentation")
    document = {"systems": [{"id": 1, "name": "api", "status": "online"}], "ideas": [], "links": [], "files": []}
    document |= {"nextId": 1, "nextLinkId": 1, "nextFileId": 1, "nextSystemId": 2}
    settings.path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    await mirror(pool, sink, settings)
    await transitions.promote(pool, settings, actor=ACTOR, max_lag=1.0)
    await pool.execute(
        "INSERT INTO documentation.documentation_systems (id, name, status) VALUES ('7', 'db', 'offline')"
    )
    assert await flush(pool, settings) == 1
    written = orjson.loads(settings.path.read_bytes())
    assert written["systems"][1] == {"id": 7, "name": "db", "shortName": None, "port": None, "status": "offline",
                                     "color": None, "icon": None}
    assert (written["nextSystemId"], written["nextId"]) == (8, 1)


async def test_reverse_sync_runner_follows_writes(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """The daemon's runner polls the outbox and stops cleanly."""
    await promoted(pool, mirrored)
    runner = reverse.ReverseSync(mirrored, pool, poll=0.02)
    task = asyncio.create_task(runner.run())
    try:
        await pool.execute(INSERT_ITEM, "via-runner")

        async def in_file() -> bool:
            written = any(r["id"] == "via-runner" for r in orjson.loads(mirrored.path.read_bytes())["items"])
            return written and runner.state.caught_up  # the file is written just before the pass ends

        await eventually(in_file, what="insert written back")
        assert runner.state.mode == "pg-primary"
    finally:
        await runner.stop(task, 5.0)
    assert task.cancelled()
