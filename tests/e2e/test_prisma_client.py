"""The Node services' view: a real Prisma 7 client on schemas/prisma/schema.prisma, on a synced database.

`prisma validate` and `prisma generate` run offline with PRISMA_SCHEMA_ENGINE_BINARY pointing at a
stub that exits 1 (the CLI insists on the binary but neither command uses it). The generated client
then reads every model from rows syncd's own sink wrote, and writes through interactive
transactions; the audit log must record those writes with the writer's origin, not syncd's.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncd.model import Batch, Checkpoint, TableChanges
from syncd.prisma import read_schema
from syncd.sink.postgres import PostgresSink
from tests.e2e.prisma import (
    NODE_BIN,
    generate,
    install_node_modules,
    prisma_env,
    prisma_project,
    run,
    write_through_prisma,
)

NODE = shutil.which("node")
T0 = datetime(2025, 10, 23, 22, 45, 24, 940000, tzinfo=UTC)
NEW_ID = "item-1767323045678-prisma1"
SYNCED_ID = "synced-1"

pytestmark = [
    pytest.mark.e2e,
]


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    """The npm packages Prisma needs."""
    install_node_modules()


def seed_batch() -> Batch:
    """Rows for every synced model, applied by syncd's sink as a LowDB mirror batch would be."""
    h = b"\x01" * 16

    def changes(table: str, columns: tuple[str, ...], *rows: tuple[Any, ...]) -> TableChanges:
        key = ("ts", "signal_key") if table.endswith("tp_capital_signals") else ("id",)
        key = ("collection", "id") if table == "syncd.documents" else key
        return TableChanges(table, (*columns, "row_hash"), key, [(*r, h) for r in rows])

    tables = [
        changes("workspace.workspace_categories", ("id", "name"), ("1", "dashboard")),
        changes(
            "workspace.workspace_items",
            ("id", "title", "category", "tags", "created_at"),
            (SYNCED_ID, "Synced one", "dashboard", ["a"], T0),
            ("2", "Synced two", "dashboard", [], T0),
        ),
        changes("documentation.documentation_systems", ("id", "name", "port"), ("s1", "API", 3200)),
        changes(
            "documentation.documentation_ideas", ("id", "title", "category", "created_at"), ("i1", "Idea", "x", T0)
        ),
        changes(
            "documentation.documentation_links",
            ("id", "url", "idea_id", "system_id"),
            ("l1", "https://example.org", "i1", "s1"),
            ("l2", "https://example.org/dangling", "gone", None),
        ),
        changes(
            "documentation.documentation_files", ("id", "filename", "size", "idea_id"), ("f1", "a.txt", 2**40, "i1")
        ),
        changes("signals.tp_capital_signals", ("ts", "signal_key", "asset", "buy_min"), (T0, "k1", "PETR4", 31.5)),
        changes("signals.telegram_bots", ("id", "status", "updated_at"), ("b1", "active", T0)),
        changes("signals.telegram_channels", ("id", "status", "updated_at", "channel_id"), ("c1", "active", T0, -100)),
        changes("syncd.documents", ("collection", "id", "doc"), ("notes", "n1", {"text": "hi"})),
    ]
    return Batch(Checkpoint("lowdb", "workspace", {"version": 1}), tables, mirror_of="workspace.json")


async def seed(pool: asyncpg.Pool) -> None:
    """Sync rows through the real sink; `mirror_of` also creates the file's syncd.cutover row."""
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    await PostgresSink(pool, epoch).apply(seed_batch())
    # cutover_log is only written by `syncd cutover`; one row stands in for a past promote.
    await pool.execute(
        """INSERT INTO syncd.cutover_log (name, from_mode, to_mode, reason)
           VALUES ('x.json', 'mirror', 'pg-primary', 'seed')"""
    )


def delegates() -> dict[str, str]:
    """Prisma client delegate (model name, first letter lowered) → `schema.table`."""
    return {t.model[0].lower() + t.model[1:]: f"{s}.{n}" for (s, n), t in read_schema().items()}


async def table_counts(pool: asyncpg.Pool, tables: dict[str, str]) -> dict[str, int]:
    """Row count of every table, per delegate, straight from PostgreSQL."""
    return {d: await pool.fetchval(f"SELECT count(*) FROM {t}") for d, t in tables.items()}


async def test_prisma_client_reads_synced_rows_and_its_writes_are_audited(
    pool: asyncpg.Pool, dsn: str, tmp_path: Path
) -> None:
    """validate → generate → every model readable; transactional writes audited with origin 'app'/'idea-bank'."""
    project = prisma_project(tmp_path)
    env = prisma_env(tmp_path, dsn)
    assert "is valid" in run([str(NODE_BIN / "prisma"), "validate"], project, env)
    run([str(NODE_BIN / "prisma"), "format", "--check"], project, env)
    client = generate(project, env)

    await seed(pool)
    tables = delegates()
    expected = await table_counts(pool, tables)
    assert all(expected.values()), f"every model needs rows to read: {expected}"

    out = orjson.loads(write_through_prisma(client, env, list(tables), NEW_ID, SYNCED_ID))

    assert {d: c["count"] for d, c in out["before"].items()} == expected
    assert {d: c["rows"] for d, c in out["before"].items()} == expected
    # Relations resolve through the client; a dangling reference (LowDB allows it) reads as null.
    links = {link["id"]: link for link in out["relations"]}
    assert links["l1"]["idea"]["files"][0]["id"] == "f1"
    assert links["l1"]["system"]["name"] == "API"
    assert links["l2"]["idea"] is None
    assert out["app"]["created"]["createdAt"] == "2026-01-02T03:04:05.678Z"
    assert out["app"]["updated"]["status"] == "review"
    assert out["named"]["title"] == "Renamed by idea-bank"
    await assert_audited(pool)


async def assert_audited(pool: asyncpg.Pool) -> None:
    """syncd's triggers saw each Prisma write with the writer's origin; syncd's own apply says 'syncd'."""
    rows = await pool.fetch(
        """SELECT key, op, origin, changed_fields, txid FROM syncd.audit_log
            WHERE table_name = 'workspace.workspace_items' AND key = ANY($1::text[]) ORDER BY id""",
        [NEW_ID, SYNCED_ID],
    )
    got = [(r["key"], r["op"], r["origin"]) for r in rows]
    assert got == [
        (SYNCED_ID, "insert", "syncd"),
        (NEW_ID, "insert", "app"),
        (SYNCED_ID, "update", "app"),
        (NEW_ID, "update", "idea-bank"),
    ]
    # One interactive transaction: the create and the update commit together.
    assert rows[1]["txid"] == rows[2]["txid"] != rows[3]["txid"]
    assert rows[2]["changed_fields"] == ["status", "updated_at", "updated_by"]
    assert rows[3]["changed_fields"] == ["title", "updated_at"]  # the table keeps updated_at
    # The reverse path reads the outbox: Prisma's writes are there, not mistaken for syncd's own.
    origins = await pool.fetch("SELECT DISTINCT origin FROM syncd.outbox WHERE key = $1 ORDER BY origin", NEW_ID)
    assert [r["origin"] for r in origins] == ["app", "idea-bank"]
