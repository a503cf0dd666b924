"""Parity of a LowDB file and PostgreSQL, and `syncd verify`'s exit codes, on a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from syncd import metrics
from syncd.config import LowdbSettings
from syncd.cutover.verify import record_metrics, verify_file
from syncd.sink.postgres import PostgresSink
from tests.integration.cutover.conftest import item, mirror, write_file

SYNCD = Path(sys.executable).with_name("syncd")


async def test_a_mirrored_file_is_clean(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """Right after the forward stream applied it, file and PostgreSQL are equal table by table."""
    async with pool.acquire() as conn:
        parity = await verify_file(conn, mirrored)
    assert parity.clean
    assert {t.table: (t.source_rows, t.pg_rows) for t in parity.tables} == {
        "workspace.workspace_categories": (2, 2),
        "workspace.workspace_items": (3, 3),
    }


async def test_planted_mismatches_are_found_and_named(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """A changed row, a row missing in PG, a row only in PG and an invalid record: each is listed."""
    await pool.execute("UPDATE workspace.workspace_items SET title = 'tampered' WHERE id = '1'")
    await pool.execute("DELETE FROM workspace.workspace_items WHERE id = 'item-1762600000000-k3j9x2a'")
    await pool.execute(
        """INSERT INTO workspace.workspace_items (id, title, description, category, priority, status, created_at)
           VALUES ('only-in-pg', 't', 'd', 'dashboard', 'low', 'new', now())"""
    )
    items = [item("1"), item("0c160b10-4aed-4bca-9f96-704f31d3ccf9"), item("item-1762600000000-k3j9x2a")]
    write_file(mirrored.path, [*items, item("bad", title="  ")])
    async with pool.acquire() as conn:
        parity = await verify_file(conn, mirrored)
    (table,) = [t for t in parity.tables if t.table == "workspace.workspace_items"]
    assert not parity.clean
    assert table.differing == ("1",)
    assert table.missing_in_pg == ("item-1762600000000-k3j9x2a",)
    assert table.missing_in_source == ("only-in-pg",)
    assert table.invalid == ("bad",)
    assert table.mismatched_rows == 4
    assert table.differing_buckets
    record_metrics([parity])
    assert metrics.VERIFY_MISMATCH_ROWS.labels("workspace.workspace_items")._value.get() == 4


async def test_timestamps_compare_by_instant_and_keep_their_spelling(
    pool: asyncpg.Pool, sink: PostgresSink, mirrored: LowdbSettings
) -> None:
    """`…:24.94+02:00` in the file is the instant `…:22:45:24.940Z` in its column, and its spelling
    rides in `extra` (the reverse path writes it back as it was): mirrored, the two sides are equal."""
    items = [item("1", createdAt="2025-10-24T00:45:24.94+02:00")]
    items += [item("0c160b10-4aed-4bca-9f96-704f31d3ccf9"), item("item-1762600000000-k3j9x2a")]
    write_file(mirrored.path, items)
    async with pool.acquire() as conn:
        assert not (await verify_file(conn, mirrored)).clean  # the spelling is part of the record
    await mirror(pool, sink, mirrored)
    row = await pool.fetchrow("SELECT created_at, extra FROM workspace.workspace_items WHERE id = '1'")
    assert row["created_at"] == datetime(2025, 10, 23, 22, 45, 24, 940000, UTC)
    assert row["extra"] == {"createdAt": "2025-10-24T00:45:24.94+02:00"}
    async with pool.acquire() as conn:
        assert (await verify_file(conn, mirrored)).clean


async def test_a_held_record_is_counted_once(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """A key PostgreSQL holds and the file now holds invalid is `!key` only, not also `+file:`/`~`."""
    items = [item("1", title=" "), item("0c160b10-4aed-4bca-9f96-704f31d3ccf9"), item("item-1762600000000-k3j9x2a")]
    write_file(mirrored.path, items)
    async with pool.acquire() as conn:
        parity = await verify_file(conn, mirrored)
    (table,) = [t for t in parity.tables if t.table == "workspace.workspace_items"]
    assert (table.invalid, table.missing_in_source, table.differing) == (("1",), (), ())
    assert table.mismatched_rows == 1


def syncd_verify(dsn: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Run the real `syncd verify` against `dsn`."""
    env = {**os.environ, "SYNCD_PG_DSN": dsn}
    return subprocess.run(
        [str(SYNCD), "verify", "--config", str(config)], env=env, capture_output=True, text=True, timeout=60
    )


async def test_cli_exit_codes(dsn: str, pool: asyncpg.Pool, mirrored: LowdbSettings, tmp_path: Path) -> None:
    """0 when clean, 1 with the mismatching key on a mismatch, 2 when PostgreSQL is unreachable."""
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[postgres]\ndsn = "x"\n[[lowdb]]\nname = "workspace"\npath = "{mirrored.path}"\nlayout = "workspace"\n'
    )
    clean = await asyncio.to_thread(syncd_verify, dsn, config)
    assert clean.returncode == 0, clean.stderr
    await pool.execute("UPDATE workspace.workspace_items SET status = 'completed' WHERE id = '1'")
    mismatch = await asyncio.to_thread(syncd_verify, dsn, config)
    assert mismatch.returncode == 1
    assert "~1" in mismatch.stdout
    unreachable = await asyncio.to_thread(syncd_verify, "postgresql://nobody@127.0.0.1:1/none", config)
    assert unreachable.returncode == 2
    assert "syncd verify: cannot connect to PostgreSQL at postgresql://nobody@127.0.0.1:1/none" in unreachable.stderr
