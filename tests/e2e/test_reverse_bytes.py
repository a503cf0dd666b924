"""The reverse path is lossless, byte for byte, on a file the real lowdb@7 wrote.

The records carry every shape upstream's versions left in files: `"metadata": {}` and
`"createdBy": null`, the id not first, unknown keys in their own order, `createdBy` a number,
`metadata` a string, `createdAt` without a zone, microseconds from another tool. After a promote,
PostgreSQL changes one field of one record; the reverse path must rewrite exactly that field's bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncd.config import LowdbSettings
from syncd.cutover import reverse, transitions
from syncd.cutover.lowdb_file import dumps
from syncd.cutover.verify import verify_file
from syncd.sink.postgres import PostgresSink
from tests.e2e.test_lowdb_writers import node_modules, run_writer
from tests.integration.cutover.conftest import mirror
from tests.lowdb_files import CATEGORIES

__all__ = ["node_modules"]  # the module fixture installing the npm writers

pytestmark = [
    pytest.mark.e2e,
]

RECORDS: list[dict[str, Any]] = [
    {"id": "nov", "title": "Current shape", "description": "d", "category": "feature", "priority": "high",
     "status": "new", "tags": ["a"], "createdAt": "2025-11-08T10:00:00.000Z", "updatedAt": "2025-11-08T10:00:00.000Z",
     "createdBy": None, "updatedBy": None, "metadata": {}},
    {"title": "Merged by an old PUT", "zeta": 1, "id": "legacy", "category": "dashboard", "alpha": {"b": 2, "a": 1},
     "priority": "medium", "status": "review", "tags": [], "createdAt": "2025-11-04 10:00:00", "updatedAt": None,
     "createdBy": 42, "metadata": "{\"source\": \"v1\"}"},
    {"id": "micro", "title": "Written by Python", "description": None, "category": "feature", "priority": "low",
     "status": "new", "tags": [], "createdAt": "2025-11-05T10:00:00.123456Z",
     "updatedAt": "2025-11-05T10:00:00.654321+00:00"},
    {"id": "1", "title": "October", "description": "d", "category": "dashboard", "priority": "critical",
     "status": "new", "tags": ["x"], "createdAt": "2025-10-23T22:45:24.940Z", "updatedAt": None},
]


@pytest.fixture
async def promoted(pool: asyncpg.Pool, tmp_path: Path) -> LowdbSettings:
    """The file written by lowdb@7, mirrored (verify clean: nothing held), then promoted."""
    settings = LowdbSettings(name="workspace", path=tmp_path / "library.json", layout="workspace",
                             timezone="America/Sao_Paulo")
    ops = [{"op": "put", "collection": "categories", "record": c} for c in CATEGORIES]
    run_writer("v7", settings.path, ops + [{"op": "put", "collection": "items", "record": r} for r in RECORDS])
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    await mirror(pool, PostgresSink(pool, epoch), settings)
    async with pool.acquire() as conn:
        assert (await verify_file(conn, settings)).clean
        assert await conn.fetchval("SELECT count(*) FROM syncd.quarantine") == 0
    await transitions.promote(pool, settings, actor="test@host", max_lag=1.0)
    return settings


async def write_back(pool: asyncpg.Pool, settings: LowdbSettings, statement: str, *args: Any) -> bytes:
    """Run `statement` as the Node services' role, then one reverse pass; the file's new bytes."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE syncd_service")
            await conn.execute(statement, *args)
        assert await reverse.flush(conn, settings) == 1
    return settings.path.read_bytes()


def with_fields(before: bytes, key: str, **fields: Any) -> bytes:
    """`before` (lowdb's bytes) with `fields` of item `key` replaced in place, as lowdb would write it."""
    document = orjson.loads(before)
    record = next(r for r in document["items"] if r["id"] == key)
    assert set(fields) <= set(record)
    record.update(fields)
    return dumps(document)


@pytest.mark.parametrize("key", [r["id"] for r in RECORDS])
async def test_one_field_changed_in_postgresql_changes_only_its_bytes(
    pool: asyncpg.Pool, promoted: LowdbSettings, key: str
) -> None:
    """updated_at set by the service: only `updatedAt`'s bytes change, whatever the record's shape."""
    before = promoted.path.read_bytes()
    assert dumps(orjson.loads(before)) == before  # lowdb's own layout, so the expectation is exact
    stamp = "UPDATE workspace.workspace_items SET updated_at = '2026-01-02T03:04:05.678Z' WHERE id = $1"
    after = await write_back(pool, promoted, stamp, key)
    assert after == with_fields(before, key, updatedAt="2026-01-02T03:04:05.678Z")


async def test_a_service_update_changes_its_field_and_the_updated_at_the_table_keeps(
    pool: asyncpg.Pool, promoted: LowdbSettings
) -> None:
    """The Workspace API's updateItem on a legacy record: title and updatedAt move, nothing else."""
    before = promoted.path.read_bytes()
    after = await write_back(
        pool, promoted, "UPDATE workspace.workspace_items SET title = 'Renamed' WHERE id = 'legacy'"
    )
    stamped = next(r for r in orjson.loads(after)["items"] if r["id"] == "legacy")["updatedAt"]
    assert stamped.endswith("Z")
    assert after == with_fields(before, "legacy", title="Renamed", updatedAt=stamped)
