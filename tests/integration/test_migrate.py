"""Migrations: in order, idempotent, checksummed, serialized by an advisory lock."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from syncd.database import connect
from syncd.errors import MigrationError
from syncd.migrate import MIGRATIONS_DIR, discover, migrate


async def test_applies_everything_once_then_nothing(empty_dsn: str) -> None:
    """A second run applies nothing and leaves one row per file."""
    conn = await connect(empty_dsn)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in discover()]
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM syncd.schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_file_once(empty_dsn: str) -> None:
    """Two instances starting together: the advisory lock makes one wait, nothing is applied twice."""
    conns = [await connect(empty_dsn) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, len(discover())]
    finally:
        for conn in conns:
            await conn.close()


async def test_refuses_when_an_applied_file_was_edited(empty_dsn: str, tmp_path: Path) -> None:
    """Editing an applied migration is refused with the file's name; nothing new is applied."""
    shutil.copytree(MIGRATIONS_DIR, tmp_path, dirs_exist_ok=True)
    conn = await connect(empty_dsn)
    try:
        await migrate(conn, discover(tmp_path))
        edited = sorted(tmp_path.glob("*.sql"))[1]
        edited.write_text(edited.read_text() + "\n-- tweak\n")
        (tmp_path / "9999_later.sql").write_text("CREATE TABLE syncd.later (x int);")
        with pytest.raises(MigrationError) as info:
            await migrate(conn, discover(tmp_path))
        assert info.value.file == edited.name
        assert await conn.fetchval("SELECT to_regclass('syncd.later')") is None
    finally:
        await conn.close()


async def test_failed_migration_names_the_file_and_rolls_back(empty_dsn: str, tmp_path: Path) -> None:
    """A broken file is reported by name with its SQLSTATE and leaves no partial state."""
    (tmp_path / "0001_ok.sql").write_text("CREATE SCHEMA IF NOT EXISTS syncd; CREATE TABLE syncd.a (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE syncd.b (x int); SELECT nope FROM nowhere;")
    conn = await connect(empty_dsn)
    try:
        with pytest.raises(MigrationError) as info:
            await migrate(conn, discover(tmp_path))
        assert info.value.file == "0002_bad.sql"
        assert "42P01" in str(info.value)
        assert await conn.fetchval("SELECT to_regclass('syncd.b')") is None
        versions = await conn.fetch("SELECT version FROM syncd.schema_migrations")
        assert [r["version"] for r in versions] == ["0001_ok"]
    finally:
        await conn.close()


async def test_capture_triggers_tag_origin(pool: asyncpg.Pool) -> None:
    """Writes outside syncd are tagged 'app'; SET LOCAL syncd.origin tags them as syncd's."""
    insert = """INSERT INTO workspace.workspace_categories (id, name, row_hash) VALUES ($1, $1, '\\x00')"""
    await pool.execute(insert, "feature")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'syncd'")
        await conn.execute(insert, "bug")
    rows = await pool.fetch("SELECT key, origin FROM syncd.audit_log ORDER BY id")
    assert [tuple(r) for r in rows] == [("feature", "app"), ("bug", "syncd")]
