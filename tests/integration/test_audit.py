"""`syncd audit TABLE KEY`: a record's history from syncd.audit_log, through the real CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from syncd import audit

SYNCD = Path(sys.executable).with_name("syncd")


def syncd_audit(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `syncd audit ARGS` against `dsn` (config from the environment only)."""
    env = {**os.environ, "SYNCD_PG_DSN": dsn}
    return subprocess.run([str(SYNCD), "audit", *args], env=env, capture_output=True, text=True, timeout=60)


async def write_history(conn: asyncpg.Connection, key: str) -> None:
    """Insert (origin syncd, as the sink sets it), update (no origin set: 'app'), delete (origin idea-bank)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'syncd'")
        await conn.execute(
            """INSERT INTO workspace.workspace_items (id, title, category, created_at, updated_at, description)
               VALUES ($1, 'First', 'feature', '2025-01-01T00:00:00Z', NULL, 'd')""",
            key,
        )
    await conn.execute("UPDATE workspace.workspace_items SET title = 'Second', status = 'review' WHERE id = $1", key)
    async with conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'idea-bank'")
        await conn.execute("DELETE FROM workspace.workspace_items WHERE id = $1", key)


@pytest.fixture
async def history_dsn(dsn: str) -> str:
    """The test database with the three-step history of item `it-1` (and noise on `it-2`)."""
    conn = await asyncpg.connect(dsn)
    try:
        await write_history(conn, "it-1")
        await conn.execute("INSERT INTO workspace.workspace_categories (name) VALUES ('bug')")
        await conn.execute(
            "INSERT INTO workspace.workspace_items (id, title, category, created_at) VALUES ('it-2', 'x', 'bug', now())"
        )
    finally:
        await conn.close()
    return dsn


async def test_json_lists_the_three_operations_in_order_with_origins(history_dsn: str) -> None:
    """--json: insert/syncd, update/app (title and status old→new), delete/idea-bank; nothing of it-2."""
    result = await asyncio.to_thread(syncd_audit, history_dsn, "workspace.workspace_items", "it-1", "--json")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(e["op"], e["origin"]) for e in lines] == [("insert", "syncd"), ("update", "app"), ("delete", "idea-bank")]
    assert {e["table"] for e in lines} == {"workspace.workspace_items"}
    assert {e["key"] for e in lines} == {"it-1"}
    assert lines[0]["txid"] < lines[1]["txid"] < lines[2]["txid"]
    insert, update, delete = lines
    assert insert["changes"]["title"] == {"old": None, "new": "First"}
    assert "updated_at" not in insert["changed_fields"]  # null in the new row: not listed
    # The app's update did not set updated_at: the table's trigger did.
    assert update["changed_fields"] == ["status", "title", "updated_at"]
    assert update["changes"]["status"] == {"old": "new", "new": "review"}
    assert update["changes"]["title"] == {"old": "First", "new": "Second"}
    assert update["changes"]["updated_at"]["old"] is None
    assert delete["changes"]["title"] == {"old": "Second", "new": None}
    assert delete["changes"]["description"] == {"old": "d", "new": None}


async def test_table_output_with_bare_name_and_limit(history_dsn: str) -> None:
    """The rich table, bare table name accepted; --limit 2 keeps the newest two, oldest first."""
    result = await asyncio.to_thread(syncd_audit, history_dsn, "workspace_items", "it-1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "syncd audit workspace.workspace_items it-1 (3 change(s))" in out
    positions = [out.index(op) for op in ("insert", "update", "delete")]
    assert positions == sorted(positions)
    for origin in ("syncd", "app", "idea-bank"):
        assert origin in out
    assert '"First" → "Second"' in out
    assert max(len(line) for line in out.splitlines()) <= 80, "piped, the table fits 80 columns"

    limited = await asyncio.to_thread(syncd_audit, history_dsn, "workspace_items", "it-1", "--limit", "2", "--json")
    assert limited.returncode == 0, limited.stderr
    assert [orjson.loads(line)["op"] for line in limited.stdout.splitlines()] == ["update", "delete"]


async def test_unknown_table_exits_2_naming_it(dsn: str) -> None:
    """An unknown table: exit 2, its name and the audited tables on stderr, nothing on stdout."""
    result = await asyncio.to_thread(syncd_audit, dsn, "workspace.no_such_table", "1")
    assert result.returncode == 2
    assert "workspace.no_such_table" in result.stderr
    assert "workspace.workspace_items" in result.stderr
    assert result.stdout == ""
    bare = await asyncio.to_thread(syncd_audit, dsn, "no_such_table", "1")
    assert bare.returncode == 2
    assert "'no_such_table'" in bare.stderr


async def test_unknown_key_prints_an_empty_history(dsn: str) -> None:
    """A known table and a key with no history: exit 0, no JSON lines."""
    result = await asyncio.to_thread(syncd_audit, dsn, "documentation_systems", "nope", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


async def test_resolve_table(dsn: str) -> None:
    """Every audited table is found by the catalog; a dropped trigger's history stays readable."""
    conn = await asyncpg.connect(dsn)
    try:
        assert await audit.audited_tables(conn) == [
            "documentation.documentation_files",
            "documentation.documentation_ideas",
            "documentation.documentation_links",
            "documentation.documentation_systems",
            "workspace.workspace_categories",
            "workspace.workspace_items",
        ]
        assert await audit.resolve_table(conn, "workspace_categories") == "workspace.workspace_categories"
        with pytest.raises(audit.UnknownTable) as info:
            await audit.resolve_table(conn, "syncd.documents")  # no audit trigger
        assert info.value.name == "syncd.documents"
        await conn.execute(
            "INSERT INTO syncd.audit_log (table_name, key, op, new, origin) "
            "VALUES ('old.gone', 'k', 'insert', '{}', 'app')"
        )
        assert await audit.resolve_table(conn, "old.gone") == "old.gone"
        entries = await audit.history(conn, "old.gone", "k")
        assert [(e.op, e.origin, e.changed_fields) for e in entries] == [("insert", "app", [])]
    finally:
        await conn.close()
