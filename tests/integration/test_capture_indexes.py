"""The queries that read syncd.outbox and syncd.audit_log use an index at scale (0099).

100k captured rows in each table, spread over 200 transactions and 200 seconds the way the capture
triggers write them (ids, txids and times growing together), then EXPLAIN of every query syncd
runs on them: none may scan either table sequentially, and each reads the index it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from syncd.audit import _HISTORY_SQL
from syncd.relay import _CHANGES

ROWS = 100_000
PER_TRANSACTION = 500
TXID0 = 10_000
ITEMS = "workspace.workspace_items"

_FILL = f"""
INSERT INTO syncd.{{table}} (table_name, key, op, {{image}}, origin, txid, {{at}})
SELECT CASE WHEN i % 10 = 0 THEN 'workspace.workspace_categories' ELSE '{ITEMS}' END,
       'item-' || (i % 20000), 'insert', jsonb_build_object('id', 'item-' || i, 'title', 'Idea ' || i),
       CASE WHEN i % 3 = 0 THEN 'app' ELSE 'syncd' END, {TXID0} + i / {PER_TRANSACTION},
       timestamptz '2026-12-01 10:00:00+00' + make_interval(secs => i / {PER_TRANSACTION})
  FROM generate_series(0, {ROWS - 1}) i
"""

# Each query with the arguments of a typical call: one record, the tail past a consumer's
# position, a consumer's settled range, the rows below the slowest consumer, five minutes.
TAIL, PRUNE_BELOW = TXID0 + ROWS // PER_TRANSACTION - 3, TXID0 + 3
QUERIES: dict[str, tuple[str, tuple[Any, ...], str, str]] = {
    "syncd audit (one record's history)": (_HISTORY_SQL, (ITEMS, "item-42", 50), "audit_log", "audit_log_record_idx"),
    "syncd explain (newest audit row)": (
        """SELECT at, op, origin, actor, txid, changed_fields FROM syncd.audit_log
            WHERE table_name = $1 AND key = $2 ORDER BY id DESC LIMIT 1""",
        (ITEMS, "item-42"),
        "audit_log",
        "audit_log_record_idx",
    ),
    "syncd explain (newest outbox events)": (
        """SELECT id, op, origin, txid, created_at FROM syncd.outbox
            WHERE table_name = $1 AND key = $2 ORDER BY id DESC LIMIT $3""",
        (ITEMS, "item-19999", 20),
        "outbox",
        "outbox_record_idx",
    ),
    "relay (changes past its position)": (_CHANGES, (TAIL, []), "outbox", "outbox_txid_idx"),
    "reverse path (a settled range)": (
        """SELECT DISTINCT table_name, key FROM syncd.outbox
            WHERE table_name = ANY($1) AND txid >= $2 AND txid < $3 AND origin <> $4""",
        ([ITEMS], TAIL, TAIL + 2, "syncd"),
        "outbox",
        "outbox_txid_idx",
    ),
    "foreign-write check (the backlog)": (
        """SELECT DISTINCT table_name, key FROM syncd.outbox
            WHERE table_name = ANY($1::text[]) AND txid >= $2 AND origin <> $3""",
        ([ITEMS], TAIL, "syncd"),
        "outbox",
        "outbox_txid_idx",
    ),
    "prune_outbox (below the slowest consumer)": (
        "DELETE FROM syncd.outbox WHERE txid < $1",
        (PRUNE_BELOW,),
        "outbox",
        "outbox_txid_idx",
    ),
    "audit log over five minutes": (
        "SELECT count(*) FROM syncd.audit_log WHERE at >= $1::timestamptz AND at < $1::timestamptz + interval '5 min'",
        (datetime(2026, 12, 1, 10, 1, tzinfo=UTC),),
        "audit_log",
        "audit_log_at_idx",
    ),
}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _scans(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[tuple[str, str, str]]:
    """(node type, relation, index) of every node of the plan of `sql` as syncd sends it: prepared,
    its parameters bound."""
    statement = await conn.prepare(f"EXPLAIN (FORMAT JSON) {sql}")
    explained = await statement.fetchval(*args)
    plan = (orjson.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    return [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in _nodes(plan)]


async def test_every_capture_query_reads_its_index(pool: asyncpg.Pool) -> None:
    await pool.execute(_FILL.format(table="outbox", image="after", at="created_at"))
    await pool.execute(_FILL.format(table="audit_log", image="new", at="at"))
    await pool.execute("ANALYZE syncd.outbox, syncd.audit_log")
    wrong = {}
    async with pool.acquire() as conn:
        for name, (sql, args, table, index) in QUERIES.items():
            scans = await _scans(conn, sql, args)
            if (("Seq Scan", table, None) in scans) or index not in {s[2] for s in scans}:
                wrong[name] = scans
    assert wrong == {}
