"""Hostile identifiers through the one quoting helper and the sink, on real PostgreSQL.

A schema, table and columns named with quotes, semicolons, uppercase and non-ASCII letters are
created, written by `PostgresSink` (the one-statement path, the staged merge, deletes) and read
back exactly; the statement an unquoted name would have run never runs.
"""

from __future__ import annotations

from hashlib import blake2b

import asyncpg
import pytest

from syncd.identifiers import quote_ident, quote_table
from syncd.model import Batch, Checkpoint, TableChanges
from syncd.sink.postgres import SMALL_BATCH, PostgresSink

SCHEMA = 'Sy"nc; --'
TABLE = "It'ems; DROP TABLE workspace.workspace_items; --"
QUALIFIED = f"{SCHEMA}.{TABLE}"
COLUMNS = ("Id", 'Ti"tle', "wörd", "row_hash")


def row(key: str, title: str) -> tuple[object, ...]:
    """A row of the hostile table."""
    return (key, title, f"wörd {key}", blake2b(f"{key}:{title}".encode(), digest_size=16).digest())


async def test_hostile_names_are_quoted_in_every_statement_the_sink_runs(pool: asyncpg.Pool) -> None:
    table = quote_table(QUALIFIED)
    await pool.execute(
        f"""CREATE SCHEMA {quote_ident(SCHEMA)};
            CREATE TABLE {table} ({quote_ident("Id")} text PRIMARY KEY, {quote_ident('Ti"tle')} text,
                                  {quote_ident("wörd")} text, row_hash bytea, synced_at timestamptz)"""
    )
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    sink = PostgresSink(pool, epoch)

    def batch(rows: list[tuple[object, ...]], deletes: list[str], position: int) -> Batch:
        changes = TableChanges(QUALIFIED, COLUMNS, ("Id",), rows, [(k,) for k in deletes])
        return Batch(Checkpoint("lowdb", "hostile", {"version": position}), [changes])

    many = [row(str(i), f'title "{i}"; --') for i in range(SMALL_BATCH + 50)]
    await sink.apply(batch(many, [], 1))  # the first load: COPY straight into the table
    edited = [row(str(i), f"edited {i}") for i in range(SMALL_BATCH + 20)]
    await sink.apply(batch(edited, ["149"], 2))  # the staged merge, and a delete
    await sink.apply(batch([row("0", "one statement")], ["148"], 3))  # the JSON one-statement path

    found = await pool.fetch(f"SELECT * FROM {table} ORDER BY {quote_ident('Id')}::int")
    assert len(found) == SMALL_BATCH + 48
    assert [tuple(r)[:3] for r in found[:2]] == [("0", "one statement", "wörd 0"), ("1", "edited 1", "wörd 1")]
    assert tuple(found[-1])[:2] == ("147", 'title "147"; --')
    assert await pool.fetchval("SELECT to_regclass('workspace.workspace_items') IS NOT NULL")
    names = await pool.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
        SCHEMA,
    )
    assert {r["relname"] for r in names} == {TABLE, f"{TABLE}_pkey"}


async def test_a_name_postgresql_would_truncate_never_reaches_it(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="over PostgreSQL's 63"):
        await pool.execute(f"CREATE TABLE {quote_ident('t' * 64)} (id int)")
    assert await pool.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'ttttttttttttttt%'") == 0
