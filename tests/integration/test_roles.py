"""Least privilege (0091_roles.sql): what the Node services' and reporting's roles may and may not do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tests.integration.conftest import session

ITEM_INSERT = """INSERT INTO workspace.workspace_items (title, category, created_at, updated_at)
                 VALUES ('t', 'bug', now(), now()) RETURNING id"""


@asynccontextmanager
async def as_role(dsn: str, role: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose privileges are `role`'s (SET ROLE: the test's login is a superuser)."""
    async with session(dsn, f"SET ROLE {role}") as conn:
        yield conn


async def test_service_role_writes_the_domain_tables_and_is_audited(dsn: str) -> None:
    """DML on workspace/documentation; the capture trigger writes outbox and audit for it."""
    async with as_role(dsn, "syncd_service") as conn:
        await conn.execute("INSERT INTO workspace.workspace_categories (name) VALUES ('bug')")
        key = await conn.fetchval(ITEM_INSERT)
        await conn.execute("UPDATE workspace.workspace_items SET status = 'review' WHERE id = $1", key)
        await conn.execute("INSERT INTO documentation.documentation_systems (id, name) VALUES ('1', 's')")
        await conn.execute("DELETE FROM documentation.documentation_systems WHERE id = '1'")
        assert await conn.fetchval("SELECT count(*) FROM signals.tp_capital_signals") == 0
        assert await conn.fetch("SELECT name, mode FROM syncd.cutover") is not None
    admin = await asyncpg.connect(dsn)
    try:
        audit = await admin.fetch(
            "SELECT op, actor FROM syncd.audit_log WHERE table_name = 'workspace.workspace_items' ORDER BY id"
        )
        login = await admin.fetchval("SELECT session_user")
    finally:
        await admin.close()
    assert [(r["op"], r["actor"]) for r in audit] == [("insert", login), ("update", login)]


SERVICE_REFUSED = [
    "INSERT INTO syncd.checkpoints (source, stream, position, epoch) VALUES ('x', 'y', '{}', 1)",
    "UPDATE syncd.cutover SET mode = 'pg-primary'",
    "SELECT * FROM syncd.outbox",
    "DELETE FROM syncd.audit_log",
    "SELECT * FROM syncd.quarantine",
    "INSERT INTO signals.tp_capital_signals (ts, signal_key, asset) VALUES (now(), 'k', 'A')",
    "ALTER TABLE workspace.workspace_items ADD COLUMN x int",
    "DROP TABLE workspace.workspace_categories",
    "CREATE TABLE workspace.mine (id int)",
    "TRUNCATE workspace.workspace_items",
    "CREATE INDEX ON documentation.documentation_ideas (title)",
]
"""The service role: nothing of syncd's own tables beyond reading the cutover mode; no DDL anywhere."""
REPORTING_REFUSED = [
    "INSERT INTO signals.tp_capital_signals (ts, signal_key, asset) VALUES (now(), 'k', 'A')",
    "DELETE FROM signals.tp_capital_signals",
    "UPDATE workspace.workspace_items SET title = 'x'",
    "INSERT INTO syncd.checkpoints (source, stream, position, epoch) VALUES ('x', 'y', '{}', 1)",
    "CREATE VIEW reporting.mine AS SELECT 1",
    "DROP VIEW reporting.ideas_totals",
]
"""The reporting role is read-only: every write and every DDL is refused."""


@pytest.mark.parametrize(
    ("role", "statement"),
    [("syncd_service", s) for s in SERVICE_REFUSED] + [("syncd_reporting", s) for s in REPORTING_REFUSED],
)
async def test_role_is_refused_what_it_may_not_do(dsn: str, role: str, statement: str) -> None:
    """Each statement outside the role's privileges fails with insufficient_privilege."""
    async with as_role(dsn, role) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


async def test_reporting_role_reads_reports_only(dsn: str) -> None:
    """reporting.* views and the range function answer; nothing else is readable."""
    async with as_role(dsn, "syncd_reporting") as conn:
        assert await conn.fetchval("SELECT count(*) FROM reporting.ideas_summary") == 0
        assert await conn.fetchval("SELECT count(*) FROM reporting.sync_health") == 0
        got = await conn.fetchval(
            "SELECT count(*) FROM reporting.signals_daily_between(now() - interval '1 day', now())"
        )
        assert got == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM workspace.workspace_items")
