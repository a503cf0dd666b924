"""0096's generated capture functions record what 0002's generic one recorded, on real PostgreSQL.

0002's `syncd.capture_changes`, as that migration file spells it, is installed beside the new
functions under another name. The same statements of every kind (multi-row insert, update, an
update of the bookkeeping columns only, an unchanged update, a key change, an INSERT … ON
CONFLICT that inserts, updates and leaves a row alone, delete, statements that touch no row)
run on a table with hostile names through each in turn, in audit and in outbox mode; the outbox
and audit rows they leave are compared whole (but for ids, txid and time).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from syncd import audit
from syncd.identifiers import quote_ident, quote_table
from syncd.migrate import discover

SCHEMA = 'Cap"ture; --'
TABLE = "It'ems Upper"
QUALIFIED = f"{SCHEMA}.{TABLE}"
KEY = 'Ke"y wörd'
TITLE = 'Ti"tle'
OLD_FUNCTION = "capture_changes_0002"


def q(name: str) -> str:
    """`name` quoted as an identifier."""
    return quote_ident(name)


def old_capture_function() -> str:
    """0002's capture function as that file creates it, renamed `syncd.capture_changes_0002`."""
    text = next(m for m in discover() if m.version == "0002_syncd_control").path.read_text()
    found = re.search(r"CREATE FUNCTION syncd\.capture_changes\(\).*?END \$\$;", text, re.DOTALL)
    assert found is not None, "0002 no longer creates syncd.capture_changes"
    return found.group(0).replace("syncd.capture_changes()", f"syncd.{OLD_FUNCTION}()")


def statements(table: str) -> list[tuple[str | None, str]]:
    """(origin, statement) pairs, one transaction each: every kind of change the triggers see."""
    key, title = q(KEY), q(TITLE)
    cols = f"({key}, {title}, num, doc, row_hash)"
    return [
        (
            "syncd",
            f"INSERT INTO {table} {cols} VALUES ('a', 'A', 1, '{{\"x\": 1}}', '\\x01'), "
            f"('b', 'B', 2, NULL, '\\x02'), ('c', 'C', NULL, '[]', '\\x03')",
        ),
        (None, f"UPDATE {table} SET {title} = 'A2' WHERE {key} = 'a'"),
        ("syncd", f"UPDATE {table} SET row_hash = '\\x09', synced_at = now() WHERE {key} = 'b'"),
        ("", f"UPDATE {table} SET num = num WHERE {key} IN ('a', 'b')"),
        ("idea-bank", f"UPDATE {table} SET num = coalesce(num, 0) + 1, doc = NULL WHERE {key} IN ('b', 'c')"),
        (None, f"UPDATE {table} SET {key} = 'c2' WHERE {key} = 'c'"),
        (
            "syncd",
            f"INSERT INTO {table} AS t {cols} VALUES ('a', 'A2', 1, '{{\"x\": 1}}', '\\x11'), "
            f"('b', 'B3', 3, NULL, '\\x12'), ('d', 'D', 4, '{{}}', '\\x13') "
            f"ON CONFLICT ({key}) DO UPDATE SET {title} = excluded.{title}, num = excluded.num, "
            "doc = excluded.doc, row_hash = excluded.row_hash, synced_at = now()",
        ),
        (
            "syncd",
            f"INSERT INTO {table} AS t {cols} VALUES ('a', 'A2', 1, NULL, '\\x21') "
            f"ON CONFLICT ({key}) DO UPDATE SET doc = excluded.doc "
            "WHERE t.row_hash IS DISTINCT FROM excluded.row_hash",
        ),
        ("idea-bank", f"DELETE FROM {table} WHERE {key} = 'b'"),
        (None, f"UPDATE {table} SET num = 0 WHERE false"),
        (None, f"DELETE FROM {table} WHERE false"),
        (None, f"INSERT INTO {table} SELECT * FROM {table} WHERE false"),
        ("syncd", f"DELETE FROM {table} WHERE {key} IN ('a', 'c2')"),
    ]


async def create_table(conn: asyncpg.Connection) -> None:
    """The hostile table, new and empty, and no outbox or audit rows."""
    table = quote_table(QUALIFIED)
    await conn.execute(f"DROP TABLE IF EXISTS {table}; TRUNCATE syncd.outbox, syncd.audit_log")
    await conn.execute(
        f"""CREATE TABLE {table} ({q(KEY)} text PRIMARY KEY, {q(TITLE)} text, num int, doc jsonb,
                                  row_hash bytea, synced_at timestamptz DEFAULT now())"""
    )


async def recorded(conn: asyncpg.Connection, attach: str) -> tuple[list[Any], list[Any]]:
    """The outbox and audit rows the statements leave on a fresh table with triggers `attach`.

    Ordered by statement, then key and operation: the order of one statement's rows is the
    plan's, which is not part of what is recorded.
    """
    await create_table(conn)
    await conn.execute(attach)
    for origin, statement in statements(quote_table(QUALIFIED)):
        async with conn.transaction():
            if origin is not None:
                await conn.execute("SELECT set_config('syncd.origin', $1, true)", origin)
            await conn.execute(statement)
    outbox = await conn.fetch(
        "SELECT table_name, key, op, before, after, origin FROM syncd.outbox ORDER BY txid, key, op, id"
    )
    audit_rows = await conn.fetch(
        """SELECT table_name, key, op, old, new, changed_fields, origin, actor
             FROM syncd.audit_log ORDER BY txid, key, op, id"""
    )
    return [tuple(r) for r in outbox], [tuple(r) for r in audit_rows]


def old_triggers(mode: str) -> str:
    """0002's three triggers, as its track_changes attached them, on the hostile table."""
    table, args = quote_table(QUALIFIED), f"({quote_literal(KEY)}, '{mode}')"
    return f"""
        CREATE TRIGGER syncd_capture_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION syncd.{OLD_FUNCTION}{args};
        CREATE TRIGGER syncd_capture_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION syncd.{OLD_FUNCTION}{args};
        CREATE TRIGGER syncd_capture_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION syncd.{OLD_FUNCTION}{args}"""


def quote_literal(value: str) -> str:
    """`value` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def new_triggers(mode: str) -> str:
    """0096's track_changes on the hostile table."""
    return (
        f"SELECT syncd.track_changes({quote_literal(quote_table(QUALIFIED))}, {quote_literal(KEY)}, {mode == 'audit'})"
    )


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated test database with 0002's function beside 0096's, and the schema."""
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA {q(SCHEMA)}")
        await conn.execute(old_capture_function())
        yield conn


@pytest.mark.parametrize("mode", ["audit", "outbox"])
async def test_the_generated_capture_records_what_0002_recorded(conn: asyncpg.Connection, mode: str) -> None:
    before = await recorded(conn, old_triggers(mode))
    after = await recorded(conn, new_triggers(mode))
    assert after == before
    outbox, audit_rows = after
    # Not two empty lists: the changes every statement made, in order (bookkeeping-only,
    # unchanged and empty statements none).
    assert [(r[1], r[2], r[5]) for r in outbox] == [
        ("a", "insert", "syncd"), ("b", "insert", "syncd"), ("c", "insert", "syncd"),
        ("a", "update", "app"),
        ("b", "update", "idea-bank"), ("c", "update", "idea-bank"),
        ("c", "delete", "app"), ("c2", "insert", "app"),
        ("b", "update", "syncd"), ("d", "insert", "syncd"),
        ("a", "update", "syncd"),
        ("b", "delete", "idea-bank"),
        ("a", "delete", "syncd"), ("c2", "delete", "syncd"),
    ]  # fmt: skip
    assert {r[0] for r in outbox} == {QUALIFIED}
    assert all("row_hash" not in (r[3] or r[4]) and "synced_at" not in (r[3] or r[4]) for r in outbox)
    if mode == "outbox":
        assert audit_rows == []
    else:
        assert [r[:3] for r in audit_rows] == [r[:3] for r in outbox]
        changed = [r[5] for r in audit_rows if r[2] == "update"]
        assert changed == [[TITLE], ["num"], ["doc", "num"], [TITLE], ["doc"]]
        assert {tuple(r[5]) for r in audit_rows if r[2] != "update"} == {()}


async def test_the_tracked_table_its_key_and_mode_are_read_back_exactly(conn: asyncpg.Connection) -> None:
    """syncd.tracked_tables() and the audit command see the hostile table, key and mode (0096)."""
    await recorded(conn, new_triggers("audit"))
    tracked = await conn.fetch("SELECT * FROM syncd.tracked_tables() WHERE table_name = $1", QUALIFIED)
    assert [tuple(r) for r in tracked] == [(QUALIFIED, KEY)]
    assert QUALIFIED in await audit.audited_tables(conn)
    await conn.execute(new_triggers("outbox"))  # tracking again replaces the triggers
    assert QUALIFIED not in await audit.audited_tables(conn)
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname LIKE 'syncd_capture_%'",
        quote_table(QUALIFIED),
    )
    assert count == 3


async def test_tracking_a_column_the_table_lacks_fails_naming_it(conn: asyncpg.Connection) -> None:
    await create_table(conn)
    with pytest.raises(asyncpg.UndefinedColumnError, match='has no column "Ke""y"'):
        await conn.execute(f"SELECT syncd.track_changes({quote_literal(quote_table(QUALIFIED))}, 'Ke\"y', true)")


async def test_a_column_named_like_the_row_alias_is_no_row(conn: asyncpg.Connection) -> None:
    """Columns `n` and `o` (0002's aliases of the new and old row, which its to_jsonb(n) took for
    the column): the whole row is recorded."""
    await conn.execute(f"CREATE TABLE {q(SCHEMA)}.aliases (id text PRIMARY KEY, n jsonb, o jsonb)")
    await conn.execute(f"SELECT syncd.track_changes('{q(SCHEMA)}.aliases', 'id', true)")
    await conn.execute(f"""INSERT INTO {q(SCHEMA)}.aliases VALUES ('k', '{{"a": 1}}', '{{"b": 2}}')""")
    await conn.execute(f"UPDATE {q(SCHEMA)}.aliases SET n = '{{}}'")
    await conn.execute(f"DELETE FROM {q(SCHEMA)}.aliases")
    rows = await conn.fetch("SELECT op, old, new, changed_fields FROM syncd.audit_log ORDER BY id")
    row = {"id": "k", "n": {"a": 1}, "o": {"b": 2}}
    assert [tuple(r) for r in rows] == [
        ("insert", None, row, []),
        ("update", row, {**row, "n": {}}, ["n"]),
        ("delete", {**row, "n": {}}, None, []),
    ]


async def test_the_migration_tracks_every_table_0002_tracked_with_generated_functions(conn: asyncpg.Connection) -> None:
    """After 0096 the six domain tables keep their keys and audit mode, and 0002's function is gone."""
    rows = await conn.fetch(
        """SELECT t.tgrelid::regclass::text AS tbl, t.tgname, t.tgfoid::regproc::text AS fn,
                  syncd.trigger_args(t.tgargs, t.tgnargs) AS args
             FROM pg_trigger t WHERE t.tgname LIKE 'syncd_capture_%' ORDER BY 1, 2"""
    )
    assert len(rows) == 18
    assert {r["tbl"].split(".")[0] for r in rows} == {"workspace", "documentation"}
    assert {(r["tgname"], r["fn"]) for r in rows} == {
        ("syncd_capture_ins", "syncd.capture_ins_audit_id"),
        ("syncd_capture_upd", "syncd.capture_upd_audit_id"),
        ("syncd_capture_del", "syncd.capture_del_audit_id"),
    }
    assert {tuple(r["args"]) for r in rows} == {("id", "audit")}
    assert await conn.fetchval("SELECT to_regproc('syncd.capture_changes')") is None
