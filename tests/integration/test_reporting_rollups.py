"""The all-time signal reports (0055 rollups) equal the full scans after random changes.

Random statements of every kind the table sees (COPY and multi-row INSERTs, UPDATEs of any column
including the day, channel, asset and source, soft deletes and their undo, DELETEs, a rolled back
batch, the sink's own batches) run against a real PostgreSQL; after each one
`reporting.signals_daily` and `reporting.signals_by_channel` must equal the aggregation of the signals
themselves (0050's definitions, kept here as the reference). Averages are compared to 9 decimals:
the rollup sums exact numerics, the scan averages doubles.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from syncd.model import Batch, Checkpoint, TableChanges
from syncd.sink.postgres import PostgresSink

TABLE = "signals.tp_capital_signals"
COLUMNS = ("ts", "signal_key", "channel", "asset", "buy_min", "buy_max", "target_1", "target_2", "stop", "source",
           "deleted_at", "row_hash")
START = datetime(2025, 3, 30, tzinfo=UTC)
DAILY = """SELECT day, channel, asset, signals, first_ts, last_ts, with_buy_range, with_target, with_stop,
                  round(avg_target_1_pct::numeric, 9) AS t1, round(avg_stop_pct::numeric, 9) AS stop
             FROM {source}"""
FULL_DAILY = "reporting.signals_daily_between('-infinity', 'infinity')"
FULL_BY_CHANNEL = """(SELECT s.source, s.channel,
       count(*) FILTER (WHERE s.deleted_at IS NULL) AS signals,
       count(*) FILTER (WHERE s.deleted_at IS NOT NULL) AS deleted,
       count(DISTINCT s.asset) FILTER (WHERE s.deleted_at IS NULL) AS assets,
       count(DISTINCT (s.ts AT TIME ZONE 'UTC')::date) FILTER (WHERE s.deleted_at IS NULL) AS active_days,
       min(s.ts) FILTER (WHERE s.deleted_at IS NULL) AS first_ts,
       max(s.ts) FILTER (WHERE s.deleted_at IS NULL) AS last_ts
  FROM signals.tp_capital_signals s GROUP BY s.source, s.channel) full_scan"""


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection on the test's freshly migrated database, partitions over two months."""
    c = await asyncpg.connect(dsn)
    await c.execute(f"SELECT signals.ensure_partitions('{TABLE}', $1, $2)", START, START + timedelta(days=40))
    try:
        yield c
    finally:
        await c.close()


def signal(rng: random.Random, n: int) -> tuple[Any, ...]:
    """A random signal: few days, channels, assets and sources (NULLs included) so groups collide."""
    entry = rng.choice([None, 0.0, 10.0, 20.0])
    return (
        START + timedelta(days=rng.randrange(4), hours=rng.randrange(24), seconds=rng.randrange(60)),
        f"k{n}",
        rng.choice(["TP", "Other", None]),
        rng.choice(["PETR4", "VALE3", "BEEF3", None]),
        entry,
        rng.choice([None, entry and entry + 2]),
        rng.choice([None, 11.0, 25.0]),
        rng.choice([None, 30.0]),
        rng.choice([None, 9.0]),
        rng.choice(["telegram", "manual", None]),
        rng.choice([None] * 5 + [START]),
        b"\x00",
    )


async def mutate(conn: asyncpg.Connection, sink: PostgresSink, rng: random.Random, step: int) -> None:
    """One random statement against the signals."""
    stored = [tuple(r) for r in await conn.fetch(f"SELECT ts, signal_key FROM {TABLE}")]
    picked = rng.sample(stored, min(len(stored), rng.randint(1, 6))) if stored else []
    some = [key for _, key in picked]
    keys = bool(stored)
    kind = rng.choice(["copy", "insert", "sink", "update", "move", "soft", "undelete", "delete", "rollback"])
    if kind == "copy" or not keys:
        rows = [signal(rng, step * 100 + i) for i in range(rng.randint(1, 40))]
        await conn.copy_records_to_table("tp_capital_signals", schema_name="signals", columns=COLUMNS, records=rows)
    elif kind == "insert":
        rows = [signal(rng, step * 100 + i) for i in range(rng.randint(1, 5))]
        await conn.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES "
                               f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})", rows)
    elif kind == "sink":
        # The sink's merge: new keys and changed versions of existing ones in one batch.
        rows = [signal(rng, step * 100 + i) for i in range(rng.randint(1, 5))]
        rows += [(ts, key, *signal(rng, 0)[2:-1], bytes([step % 256])) for ts, key in picked[:2]]
        changes = TableChanges(TABLE, COLUMNS, ("ts", "signal_key"), rows)
        await sink.apply(Batch(Checkpoint("questdb", "rollup-test", {"step": step}), [changes]))
    elif kind == "update":
        await conn.execute(f"UPDATE {TABLE} SET target_1 = $2, stop = $3, buy_max = $4 WHERE signal_key = ANY($1)",
                           some, rng.choice([None, 5.0, 40.0]), rng.choice([None, 1.0]), rng.choice([None, 30.0]))
    elif kind == "move":
        # Across days, channels, assets and sources (a ts change may move a row between partitions).
        await conn.execute(f"UPDATE {TABLE} SET ts = ts + $2, channel = $3, asset = $4, source = $5 "
                           "WHERE signal_key = ANY($1)", some, timedelta(hours=rng.randrange(-30, 30)),
                           rng.choice(["TP", None]), rng.choice(["PETR4", "NEW3", None]), rng.choice(["manual", None]))
    elif kind == "soft":
        await conn.execute(f"UPDATE {TABLE} SET deleted_at = now() WHERE signal_key = ANY($1)", some)
    elif kind == "undelete":
        await conn.execute(f"UPDATE {TABLE} SET deleted_at = NULL WHERE signal_key = ANY($1)", some)
    elif kind == "delete":
        await conn.execute(f"DELETE FROM {TABLE} WHERE signal_key = ANY($1)", some)
    else:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"DELETE FROM {TABLE} WHERE signal_key = ANY($1)", some)
        await tx.rollback()


async def same(conn: asyncpg.Connection, view: str, full: str, order: str) -> None:
    """The rollup-backed view and the full scan return the same rows."""
    got = [dict(r) for r in await conn.fetch(f"SELECT * FROM ({view}) v ORDER BY {order}")]
    want = [dict(r) for r in await conn.fetch(f"SELECT * FROM ({full}) f ORDER BY {order}")]
    assert got == want


async def test_rollup_views_equal_full_scans_after_random_changes(conn: asyncpg.Connection,
                                                                   sink: PostgresSink) -> None:
    """Every kind of statement, 150 of them, compared after each; empty groups vanish too."""
    rng = random.Random(17)
    for step in range(150):
        await mutate(conn, sink, rng, step)
        await same(conn, DAILY.format(source="reporting.signals_daily"), DAILY.format(source=FULL_DAILY),
                   "day, channel, asset")
        await same(conn, "SELECT * FROM reporting.signals_by_channel", f"SELECT * FROM {FULL_BY_CHANNEL}",
                   "source, channel")
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily") > 10
    await conn.execute(f"DELETE FROM {TABLE}")
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily_rollup") == 0
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_channel_asset_rollup") == 0
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_channel_day_rollup") == 0


async def test_all_time_views_read_the_rollups_not_the_signals(conn: asyncpg.Connection) -> None:
    """The plans of the all-time views touch no signals partition."""
    for view in ("reporting.signals_daily", "reporting.signals_by_channel"):
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT * FROM {view}")
        assert "tp_capital_signals" not in plan, view
