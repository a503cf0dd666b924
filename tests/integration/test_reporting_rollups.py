"""The all-time signal reports (0055 rollups) equal the full scans after random changes.

Random statements of every kind the table sees (COPY and multi-row INSERTs, UPDATEs of any column
including the day, channel, asset and source, soft deletes and their undo, DELETEs, a rolled back
batch, the sink's own batches) run against a real PostgreSQL; after each one
`reporting.signals_daily` and `reporting.signals_by_channel` must equal the aggregation of the signals
themselves (0050's definitions, kept here as the reference). Averages are compared to 9 decimals:
the rollup sums exact numerics, the scan averages doubles. The rollup tables themselves are compared
exactly with their definition too (ROLLUPS): the numeric sums of the percentages, the deleted counts.
"""

from __future__ import annotations

import itertools
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
# Each rollup table (0055) as the aggregation of the signals it stands for; (name, reference, key).
# Every row's percentage is cast to numeric by itself, so the sums are exact and must be equal.
ENTRY = "CROSS JOIN LATERAL (SELECT coalesce((s.buy_min + s.buy_max) / 2, s.buy_min, s.buy_max) AS entry) e"
ROLLUPS = (
    ("reporting.signals_daily_rollup",
     f"""SELECT (s.ts AT TIME ZONE 'UTC')::date AS day, s.channel, s.asset, count(*) AS signals,
                min(s.ts) AS first_ts, max(s.ts) AS last_ts,
                count(*) FILTER (WHERE s.buy_min IS NOT NULL OR s.buy_max IS NOT NULL) AS with_buy_range,
                count(*) FILTER (WHERE coalesce(s.target_1, s.target_2, s.target_final) IS NOT NULL) AS with_target,
                count(*) FILTER (WHERE s.stop IS NOT NULL) AS with_stop,
                coalesce(sum(((s.target_1 - e.entry) / e.entry * 100)::numeric) FILTER (WHERE e.entry > 0), 0)
                    AS target_1_pct_sum,
                count(s.target_1) FILTER (WHERE e.entry > 0) AS target_1_pct_n,
                coalesce(sum(((s.stop - e.entry) / e.entry * 100)::numeric) FILTER (WHERE e.entry > 0), 0)
                    AS stop_pct_sum,
                count(s.stop) FILTER (WHERE e.entry > 0) AS stop_pct_n
           FROM {TABLE} s {ENTRY} WHERE s.deleted_at IS NULL GROUP BY 1, 2, 3""",
     "day, channel, asset"),
    ("reporting.signals_channel_day_rollup",
     f"""SELECT s.source, s.channel, (s.ts AT TIME ZONE 'UTC')::date AS day,
                count(*) FILTER (WHERE s.deleted_at IS NULL) AS signals,
                count(*) FILTER (WHERE s.deleted_at IS NOT NULL) AS deleted,
                min(s.ts) FILTER (WHERE s.deleted_at IS NULL) AS first_ts,
                max(s.ts) FILTER (WHERE s.deleted_at IS NULL) AS last_ts
           FROM {TABLE} s GROUP BY 1, 2, 3""",
     "source, channel, day"),
    ("reporting.signals_channel_asset_rollup",
     f"SELECT s.source, s.channel, s.asset, count(*) AS signals FROM {TABLE} s WHERE s.deleted_at IS NULL "
     "GROUP BY 1, 2, 3",
     "source, channel, asset"),
)


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


async def all_equal(conn: asyncpg.Connection) -> None:
    """Both views equal their full scans, and each rollup table its definition."""
    await same(conn, DAILY.format(source="reporting.signals_daily"), DAILY.format(source=FULL_DAILY),
               "day, channel, asset")
    await same(conn, "SELECT * FROM reporting.signals_by_channel", f"SELECT * FROM {FULL_BY_CHANNEL}",
               "source, channel")
    for table, reference, key in ROLLUPS:
        columns = ", ".join(a.name for a in (await conn.prepare(reference)).get_attributes())
        await same(conn, f"SELECT {columns} FROM {table}", reference, key)


async def test_rollup_views_equal_full_scans_after_random_changes(conn: asyncpg.Connection,
                                                                   sink: PostgresSink) -> None:
    """Every kind of statement, 150 of them, compared after each; empty groups vanish too."""
    rng = random.Random(17)
    for step in range(150):
        await mutate(conn, sink, rng, step)
        await all_equal(conn)
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily") > 10
    await conn.execute(f"DELETE FROM {TABLE}")
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily_rollup") == 0
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_channel_asset_rollup") == 0
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_channel_day_rollup") == 0


def crowded_rows() -> list[tuple[Any, ...]]:
    """Signals crowding few groups: every source (NULL too) in each (day, channel, asset), NULL channels
    and assets, priced (entry from both bounds or either one) and unpriced (no bounds, entry 0) rows,
    some soft deleted, over two days with rows on either side of midnight."""
    midnight = START + timedelta(days=1)
    entries = [(10.0, 10.5), (20.0, None), (None, 8.0), (None, None), (0.0, 0.0)]
    rows = []
    for n, (channel, asset, source, (buy_min, buy_max), offset) in enumerate(itertools.product(
            ["TP", None], ["PETR4", None], ["telegram", "manual", None], entries,
            [timedelta(microseconds=-1), timedelta(microseconds=1), timedelta(minutes=-1), timedelta(minutes=3)])):
        rows.append((midnight + offset * (n // 4), f"c{n}", channel, asset, buy_min, buy_max,
                     11.0 + n % 3 / 7, [None, 30.0][n % 2], [None, 9.0 + n / 13][n % 3 > 0], source,
                     START if n % 11 == 0 else None, b"\x00"))
    return rows


async def test_rollups_fold_statements_spanning_many_groups(conn: asyncpg.Connection) -> None:
    """One statement at a time touching many groups at once, each compared exactly: a COPY over two
    days, an UPDATE that moves rows across midnight and sources while deleting some and restoring
    others, a DELETE of the rows holding the bounds, a multi-row INSERT into the emptied groups."""
    rows = crowded_rows()
    await conn.copy_records_to_table("tp_capital_signals", schema_name="signals", columns=COLUMNS, records=rows)
    await all_equal(conn)
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily_rollup") == 8
    # Every (day, channel, asset) holds three sources: 2 days x 2 channels x 3 sources, NULL included.
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_channel_day_rollup") == 12
    await conn.execute(f"""UPDATE {TABLE} SET ts = ts + interval '2 hours',
                                  source = CASE WHEN source = 'manual' THEN NULL ELSE source END,
                                  deleted_at = CASE WHEN deleted_at IS NULL THEN now() END
                            WHERE signal_key ~ '^c[0-9]*[0-4]$'""")
    await all_equal(conn)
    await conn.execute(f"""DELETE FROM {TABLE} t USING (
                               SELECT (ts AT TIME ZONE 'UTC')::date, channel, asset, min(ts) AS lo, max(ts) AS hi
                                 FROM {TABLE} WHERE deleted_at IS NULL GROUP BY 1, 2, 3) b
                            WHERE t.channel IS NOT DISTINCT FROM b.channel AND t.asset IS NOT DISTINCT FROM b.asset
                              AND t.ts IN (b.lo, b.hi)""")
    await all_equal(conn)
    await conn.execute(f"DELETE FROM {TABLE} WHERE asset IS NULL")
    await all_equal(conn)
    again = [row for row in rows if row[3] is None][::3]
    await conn.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
                       "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::float8[], "
                       "$6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::timestamptz[], "
                       "$12::bytea[])", *map(list, zip(*again, strict=True)))
    await all_equal(conn)
    assert await conn.fetchval("SELECT count(*) FROM reporting.signals_daily_rollup WHERE asset IS NULL") > 0


async def test_all_time_views_read_the_rollups_not_the_signals(conn: asyncpg.Connection) -> None:
    """The plans of the all-time views touch no signals partition."""
    for view in ("reporting.signals_daily", "reporting.signals_by_channel"):
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT * FROM {view}")
        assert "tp_capital_signals" not in plan, view
