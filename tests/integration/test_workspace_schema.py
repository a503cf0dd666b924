"""0090_workspace_service.sql: the Workspace API's own PostgreSQL statements run on syncd's tables.

The statements are the ones upstream-workspace-api.md §3 describes, run as the service role; syncd's
own writes (origin 'syncd') keep the file's values and may mirror dangling category references.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.integration.conftest import session

COLUMNS = (
    "id, title, description, category, priority, status, tags, created_at, updated_at, created_by, updated_by, metadata"
)
CREATE_ITEM = f"""INSERT INTO workspace.workspace_items
    (title, description, category, priority, status, tags, created_at, updated_at, created_by, updated_by, metadata)
    VALUES ($1, 'd', $2, 'medium', 'new', '{{}}', now(), now(), NULL, NULL, '{{}}') RETURNING {COLUMNS}"""
GET_CATEGORIES = """SELECT name AS id, name, display_name, description, is_active, sort_order AS display_order,
    created_at, updated_at FROM workspace.workspace_categories WHERE is_active = true ORDER BY sort_order"""
CREATE_CATEGORY = """INSERT INTO workspace.workspace_categories
    (name, display_name, description, sort_order, is_active, created_at, updated_at)
    VALUES ($1, $2, $3, 99, true, now(), now())"""
T0 = datetime(2025, 11, 8, 10, 0, tzinfo=UTC)


@pytest.fixture
async def service(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection with the Node services' privileges."""
    async with session(dsn, "SET ROLE syncd_service") as conn:
        yield conn


@pytest.fixture
async def mirror(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection writing as syncd's sink does (origin 'syncd')."""
    async with session(dsn, "SET syncd.origin = 'syncd'") as conn:
        yield conn


async def test_the_database_assigns_ids_names_and_timestamps(service: asyncpg.Connection) -> None:
    """createItem has no id column; POST /api/categories has no id; both get what the table defaults."""
    await service.execute(CREATE_CATEGORY, "feature", None, "New features")
    await service.execute(CREATE_CATEGORY, "bug", "Bugs", None)
    item = await service.fetchrow(CREATE_ITEM, "first", "feature")
    assert len(item["id"]) == 36
    assert item["id"].count("-") == 4
    bare = await service.fetchrow(
        "INSERT INTO workspace.workspace_items (title, category) VALUES ('bare', 'bug')"
        " RETURNING created_at, updated_at"
    )
    assert bare["created_at"] is not None
    assert bare["updated_at"] == bare["created_at"]
    categories = await service.fetch(GET_CATEGORIES)
    assert [(c["id"], c["display_name"], c["display_order"]) for c in categories] == [
        ("feature", "feature", 99),
        ("bug", "Bugs", 99),
    ]
    with pytest.raises(asyncpg.UniqueViolationError):  # the route answers 409
        await service.execute(CREATE_CATEGORY, "bug", None, None)


async def test_updated_at_follows_updates_except_syncds_and_explicit_ones(
    service: asyncpg.Connection, mirror: asyncpg.Connection
) -> None:
    """Upstream's BEFORE UPDATE trigger, minus the two writes that carry their own value."""
    await mirror.execute("INSERT INTO workspace.workspace_categories (id, name) VALUES ('bug', 'bug')")
    await mirror.execute(
        """INSERT INTO workspace.workspace_items (id, title, category, created_at, updated_at)
           VALUES ('a', 't', 'bug', $1, $1)""",
        T0,
    )
    await mirror.execute("UPDATE workspace.workspace_items SET title = 'from the file' WHERE id = 'a'")
    assert await mirror.fetchval("SELECT updated_at FROM workspace.workspace_items WHERE id = 'a'") == T0
    explicit = datetime(2025, 11, 9, tzinfo=UTC)
    await service.execute("UPDATE workspace.workspace_items SET title = 'x', updated_at = $1 WHERE id = 'a'", explicit)
    assert await service.fetchval("SELECT updated_at FROM workspace.workspace_items WHERE id = 'a'") == explicit
    before = await service.fetchval("SELECT now()")
    await service.execute("UPDATE workspace.workspace_items SET status = 'review' WHERE id = 'a'")
    assert await service.fetchval("SELECT updated_at FROM workspace.workspace_items WHERE id = 'a'") >= before.replace(
        microsecond=before.microsecond // 1000 * 1000
    )
    await service.execute("UPDATE workspace.workspace_categories SET is_active = NOT is_active WHERE name = 'bug'")
    assert await service.fetchval("SELECT updated_at FROM workspace.workspace_categories") is not None


async def test_category_references_hold_for_services_not_for_the_mirror(
    service: asyncpg.Connection, mirror: asyncpg.Connection
) -> None:
    """An item needs an existing category and a used category cannot go — unless syncd mirrors a file."""
    await service.execute(CREATE_CATEGORY, "bug", None, None)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match='category "nope" does not exist'):
        await service.fetchrow(CREATE_ITEM, "x", "nope")
    item = await service.fetchrow(CREATE_ITEM, "x", "bug")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await service.execute("UPDATE workspace.workspace_items SET category = 'nope' WHERE id = $1", item["id"])
    await service.execute("UPDATE workspace.workspace_items SET title = 'y' WHERE id = $1", item["id"])
    with pytest.raises(asyncpg.ForeignKeyViolationError, match='category "bug" is used by items'):
        await service.execute("DELETE FROM workspace.workspace_categories WHERE name = 'bug'")
    # The file is the truth in mirror mode: a dangling reference is mirrored as it is.
    await mirror.execute(
        """INSERT INTO workspace.workspace_items (id, title, category, created_at)
           VALUES ('old', 't', 'banco-dados', now())"""
    )
    await mirror.execute("DELETE FROM workspace.workspace_categories WHERE name = 'bug'")
    assert await mirror.fetchval("SELECT count(*) FROM workspace.workspace_items") == 2


async def workspace_function_calls(conn: asyncpg.Connection, statements: list[str]) -> dict[str, int]:
    """The workspace trigger functions `statements` called, and how often (one transaction)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL track_functions = 'pl'")
        for statement in statements:
            await conn.execute(statement)
        rows = await conn.fetch(
            "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE schemaname = 'workspace'"
        )
    return {r["funcname"]: r["calls"] for r in rows}


async def test_syncds_own_writes_never_enter_the_trigger_functions(dsn: str, mirror: asyncpg.Connection) -> None:
    """0097's WHEN conditions: the mirror's writes (a category with its display name, as syncd maps
    it) skip every workspace trigger function; the same writes by anyone else call each of them."""
    writes = [
        "INSERT INTO workspace.workspace_categories (id, name, display_name) VALUES ('bug', 'bug', 'Bug')",
        "INSERT INTO workspace.workspace_items (id, title, category, created_at) VALUES ('a', 't', 'bug', now())",
        "UPDATE workspace.workspace_items SET title = 'u', category = 'bug' WHERE id = 'a'",
        "UPDATE workspace.workspace_categories SET name = 'bug' WHERE id = 'bug'",
        "DELETE FROM workspace.workspace_items WHERE id = 'a'",
        "DELETE FROM workspace.workspace_categories WHERE id = 'bug'",
    ]
    assert await workspace_function_calls(mirror, writes) == {}
    other = await asyncpg.connect(dsn)
    try:
        calls = await workspace_function_calls(other, [writes[0].replace("'Bug'", "NULL"), *writes[1:]])
    finally:
        await other.close()
    assert calls == {"category_defaults": 1, "item_category_exists": 2, "touch_updated_at": 2, "category_not_in_use": 2}
