"""reporting.* views (0050) on a known data set, their index use at scale, and the signals storage (0051)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson
import pytest

SIGNAL_COLUMNS = "ts, signal_key, channel, asset, buy_min, buy_max, target_1, target_2, target_final, stop, source"
INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


def at(text: str) -> datetime:
    """A UTC instant from ISO text."""
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection on the test's freshly migrated database."""
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


async def load_known_data(conn: asyncpg.Connection) -> None:
    """Signals, ideas, documentation systems/links/files and sync state with hand-computed figures."""
    await conn.execute("SELECT signals.ensure_partitions('signals.tp_capital_signals', '2024-12-01', '2025-01-31')")
    signals: list[tuple[Any, ...]] = [
        # entry 11 -> target_1 +10 %, stop -10 %
        (at("2025-01-10T09:00:00Z"), "a", "TP", "PETR4", 10.0, 12.0, 12.1, None, None, 9.9, "telegram"),
        # buy_min only: entry 20 -> target_1 +5 %, no stop
        (at("2025-01-10T15:00:00Z"), "b", "TP", "PETR4", 20.0, None, 21.0, None, None, None, "telegram"),
        # 23:30 in São Paulo is the 11th in UTC: days are UTC days
        (at("2025-01-10T23:30:00-03:00"), "c", "TP", "VALE3", None, None, None, None, None, None, "telegram"),
        # a target without a buy range: counted in with_target, not in the averages
        (at("2025-01-10T12:00:00Z"), "d", "Other", "PETR4", None, None, None, None, 50.0, None, "telegram"),
        (at("2024-12-31T23:00:00Z"), "f", "TP", "BEEF3", 1.0, 1.0, None, 2.0, None, None, "manual"),
    ]
    await conn.executemany(
        f"INSERT INTO signals.tp_capital_signals ({SIGNAL_COLUMNS}, row_hash) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '\\x00')",
        signals,
    )
    await conn.execute(
        f"INSERT INTO signals.tp_capital_signals ({SIGNAL_COLUMNS}, deleted_at, row_hash) VALUES "
        "('2025-01-10T10:00:00Z', 'e', 'TP', 'PETR4', 1, 2, 3, NULL, NULL, 0.5, 'telegram', now(), '\\x00')"
    )
    await conn.execute("INSERT INTO workspace.workspace_categories (name) VALUES ('feature'), ('bug')")
    await conn.execute(
        """INSERT INTO workspace.workspace_items (id, title, category, status, priority, tags, created_at, updated_at)
           VALUES ('w1', 'one', 'feature', 'new', 'high', '{a}', '2025-01-01T00:00:00Z', NULL),
                  ('w2', 'two', 'feature', 'new', 'high', '{}', '2025-01-03T00:00:00Z', '2025-01-05T00:00:00Z'),
                  ('w3', 'three', 'bug', 'completed', 'low', '{}', '2025-01-02T00:00:00Z', NULL)"""
    )
    await conn.execute(
        """INSERT INTO documentation.documentation_systems (id, name, short_name, type, status, url, created_at)
           VALUES ('s1', 'Order API', 'OA', 'api', 'online', 'http://oa', '2025-01-01T00:00:00Z'),
                  ('s2', 'Dashboard', NULL, 'webapp', 'offline', NULL, NULL)"""
    )
    await conn.execute(
        """INSERT INTO documentation.documentation_ideas (id, title, category, status, priority, system_id, created_at)
           VALUES ('d1', 'one', 'new_feature', 'todo', 'urgent', 's1', '2025-01-01T00:00:00Z'),
                  ('d2', 'two', 'bug_fix', 'done', 'low', 's1', '2025-01-02T00:00:00Z'),
                  ('d3', 'three', 'content', 'backlog', 'medium', NULL, '2025-01-03T00:00:00Z')"""
    )
    await conn.execute(
        """INSERT INTO documentation.documentation_links (id, url, system_id, idea_id)
           VALUES ('l1', 'u', 's1', NULL), ('l2', 'u', NULL, 'd1'), ('l3', 'u', 's1', 'd1'),
                  ('l4', 'u', NULL, 'd3'), ('l5', 'u', 's2', NULL)"""
    )
    await conn.execute(
        """INSERT INTO documentation.documentation_files (id, idea_id, filename)
           VALUES ('f1', 'd1', 'a.txt'), ('f2', 'd2', 'b.txt'), ('f3', 'd3', 'c.txt')"""
    )
    await conn.execute(
        """INSERT INTO syncd.checkpoints (source, stream, position, epoch) VALUES ('lowdb', 'workspace', '{}', 3);
           INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason)
           VALUES ('lowdb', 'workspace', 'workspace.workspace_items', 'x', '{}', 'bad'),
                  ('lowdb', 'other', 'workspace.workspace_items', 'y', '{}', 'bad')"""
    )


async def rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Query results as plain dicts."""
    return [dict(r) for r in await conn.fetch(sql, *args)]


async def test_signals_daily(conn: asyncpg.Connection) -> None:
    """Per UTC day x channel x asset; deleted rows out; averages only where an entry exists."""
    await load_known_data(conn)
    got = await rows(conn, "SELECT * FROM reporting.signals_daily ORDER BY day, channel, asset")
    assert [(r["day"], r["channel"], r["asset"], r["signals"]) for r in got] == [
        (date(2024, 12, 31), "TP", "BEEF3", 1),
        (date(2025, 1, 10), "Other", "PETR4", 1),
        (date(2025, 1, 10), "TP", "PETR4", 2),
        (date(2025, 1, 11), "TP", "VALE3", 1),
    ]
    beef, other, petr, vale = got
    assert (petr["first_ts"], petr["last_ts"]) == (at("2025-01-10T09:00:00Z"), at("2025-01-10T15:00:00Z"))
    assert (petr["with_buy_range"], petr["with_target"], petr["with_stop"]) == (2, 2, 1)
    assert petr["avg_target_1_pct"] == pytest.approx(7.5)
    assert petr["avg_stop_pct"] == pytest.approx(-10.0)
    assert (other["with_buy_range"], other["with_target"], other["with_stop"]) == (0, 1, 0)
    assert other["avg_target_1_pct"] is None
    assert vale["first_ts"] == vale["last_ts"] == at("2025-01-11T02:30:00Z")
    assert (vale["with_buy_range"], vale["with_target"], vale["with_stop"]) == (0, 0, 0)
    assert (vale["avg_target_1_pct"], vale["avg_stop_pct"]) == (None, None)
    assert (beef["with_buy_range"], beef["with_target"], beef["avg_target_1_pct"]) == (1, 1, None)

    bounded = await rows(
        conn,
        "SELECT day, channel, asset, signals FROM reporting.signals_daily_between($1, $2) ORDER BY channel",
        at("2025-01-10T00:00:00Z"),
        at("2025-01-11T00:00:00Z"),
    )
    assert bounded == [
        {"day": date(2025, 1, 10), "channel": "Other", "asset": "PETR4", "signals": 1},
        {"day": date(2025, 1, 10), "channel": "TP", "asset": "PETR4", "signals": 2},
    ]


async def test_signals_by_channel(conn: asyncpg.Connection) -> None:
    """Per source x channel: live and deleted counts, distinct assets and days, first/last live ts."""
    await load_known_data(conn)
    got = await rows(conn, "SELECT * FROM reporting.signals_by_channel ORDER BY source, channel")
    assert got == [
        {
            "source": "manual",
            "channel": "TP",
            "signals": 1,
            "deleted": 0,
            "assets": 1,
            "active_days": 1,
            "first_ts": at("2024-12-31T23:00:00Z"),
            "last_ts": at("2024-12-31T23:00:00Z"),
        },
        {
            "source": "telegram",
            "channel": "Other",
            "signals": 1,
            "deleted": 0,
            "assets": 1,
            "active_days": 1,
            "first_ts": at("2025-01-10T12:00:00Z"),
            "last_ts": at("2025-01-10T12:00:00Z"),
        },
        {
            "source": "telegram",
            "channel": "TP",
            "signals": 3,
            "deleted": 1,
            "assets": 2,
            "active_days": 2,
            "first_ts": at("2025-01-10T09:00:00Z"),
            "last_ts": at("2025-01-11T02:30:00Z"),
        },
    ]


async def test_ideas_summary_and_totals(conn: asyncpg.Connection) -> None:
    """Workspace items and Documentation ideas by category x status x priority, then per dimension."""
    await load_known_data(conn)
    summary = await rows(
        conn,
        """SELECT origin, category, status, priority, items, tagged, oldest_created_at, newest_created_at,
                  last_changed_at
             FROM reporting.ideas_summary ORDER BY origin, category""",
    )
    assert [tuple(r.values())[:6] for r in summary] == [
        ("documentation", "bug_fix", "done", "low", 1, 0),
        ("documentation", "content", "backlog", "medium", 1, 0),
        ("documentation", "new_feature", "todo", "urgent", 1, 0),
        ("workspace", "bug", "completed", "low", 1, 0),
        ("workspace", "feature", "new", "high", 2, 1),
    ]
    feature = summary[-1]
    assert feature["oldest_created_at"] == at("2025-01-01T00:00:00Z")
    assert feature["newest_created_at"] == at("2025-01-03T00:00:00Z")
    assert feature["last_changed_at"] == at("2025-01-05T00:00:00Z")

    totals = await conn.fetch("SELECT origin, dimension, value, items FROM reporting.ideas_totals")
    got = {(r["origin"], r["dimension"], r["value"]): r["items"] for r in totals}
    assert got == {
        ("workspace", "status", "new"): 2,
        ("workspace", "status", "completed"): 1,
        ("workspace", "category", "feature"): 2,
        ("workspace", "category", "bug"): 1,
        ("workspace", "priority", "high"): 2,
        ("workspace", "priority", "low"): 1,
        ("documentation", "status", "todo"): 1,
        ("documentation", "status", "done"): 1,
        ("documentation", "status", "backlog"): 1,
        ("documentation", "category", "new_feature"): 1,
        ("documentation", "category", "bug_fix"): 1,
        ("documentation", "category", "content"): 1,
        ("documentation", "priority", "urgent"): 1,
        ("documentation", "priority", "low"): 1,
        ("documentation", "priority", "medium"): 1,
    }


async def test_documentation_systems_overview(conn: asyncpg.Connection) -> None:
    """Per system: ideas, open ideas, links (direct or via its ideas, once each), files via its ideas."""
    await load_known_data(conn)
    got = await rows(
        conn,
        """SELECT id, name, short_name, type, status, url, ideas, open_ideas, links, files, last_changed_at
             FROM reporting.documentation_systems_overview ORDER BY id""",
    )
    assert got == [
        {
            "id": "s1",
            "name": "Order API",
            "short_name": "OA",
            "type": "api",
            "status": "online",
            "url": "http://oa",
            "ideas": 2,
            "open_ideas": 1,
            "links": 3,
            "files": 2,
            "last_changed_at": at("2025-01-01T00:00:00Z"),
        },
        {
            "id": "s2",
            "name": "Dashboard",
            "short_name": None,
            "type": "webapp",
            "status": "offline",
            "url": None,
            "ideas": 0,
            "open_ideas": 0,
            "links": 1,
            "files": 0,
            "last_changed_at": None,
        },
    ]


async def test_sync_health_is_kept(conn: asyncpg.Connection) -> None:
    """reporting.sync_health (0006) still answers: one row per checkpoint, held rows of its stream."""
    await load_known_data(conn)
    got = await rows(conn, "SELECT source, stream, epoch, quarantined FROM reporting.sync_health")
    assert got == [{"source": "lowdb", "stream": "workspace", "epoch": 3, "quarantined": 1}]


# -- index use at scale ----------------------------------------------------------------------------

SIGNAL_ROWS = 200_000


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(conn: asyncpg.Connection, sql: str) -> list[dict[str, Any]]:
    """The plan nodes of `sql`."""
    document = orjson.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}"))
    return list(plan_nodes(document[0]["Plan"]))


async def test_narrow_time_range_uses_an_index(conn: asyncpg.Connection) -> None:
    """200k signals over 30 days (two monthly partitions), 4 channels: a one-day report reads an index.

    Queries a day for one channel and a day for all channels through signals_daily_between: both
    prune to one partition and read it by (channel, ts) or the (ts, signal_key) primary key, no Seq Scan.
    """
    await conn.execute("SELECT signals.ensure_partitions('signals.tp_capital_signals', '2024-12-20', '2025-01-19')")
    await conn.execute(
        f"""INSERT INTO signals.tp_capital_signals ({SIGNAL_COLUMNS}, row_hash)
            SELECT '2024-12-20T00:00:00Z'::timestamptz + g * interval '30 days' / {SIGNAL_ROWS},
                   'k' || g, 'ch' || (g % 4), 'AS' || (g % 25), 10, 11, 12, 13, 14, 9, 'telegram', '\\x00'
              FROM generate_series(1, {SIGNAL_ROWS}) g"""
    )
    await conn.execute("ANALYZE signals.tp_capital_signals")
    assert await conn.fetchval("SELECT count(*) FROM signals.tp_capital_signals") == SIGNAL_ROWS

    queries = {
        "one channel, one day": "SELECT * FROM reporting.signals_daily_between("
        "'2025-01-05T00:00:00Z', '2025-01-06T00:00:00Z') WHERE channel = 'ch1'",
        "all channels, one day": "SELECT * FROM reporting.signals_daily_between("
        "'2025-01-05T00:00:00Z', '2025-01-06T00:00:00Z')",
    }
    for what, sql in queries.items():
        nodes = await explain(conn, sql)
        scans = [n for n in nodes if n.get("Relation Name", "").startswith("tp_capital_signals")]
        index_name = {n.get("Index Name") for n in nodes if n["Node Type"] in INDEX_SCANS}
        assert scans, f"{what}: no scan of the signals table in {nodes}"
        assert all(n["Node Type"] != "Seq Scan" for n in scans), f"{what}: seq scan in {scans}"
        assert {n["Relation Name"] for n in scans} == {"tp_capital_signals_p202501"}, f"{what}: no pruning"
        assert index_name & {"tp_capital_signals_p202501_pkey", "tp_capital_signals_p202501_channel_ts_idx"}, what
        figures = await conn.fetchrow(f"SELECT sum(signals)::bigint AS n, count(*) AS groups FROM ({sql}) q")
        per_day = SIGNAL_ROWS / 30
        assert figures["n"] == pytest.approx(per_day / 4 if "ch1" in sql else per_day, abs=2), what
        assert figures["groups"] == (25 if "ch1" in sql else 100), what  # assets (x channels)


# -- storage: TimescaleDB or native partitions -----------------------------------------------------


async def timescale_loaded(conn: asyncpg.Connection) -> bool:
    """Whether 0051 took the TimescaleDB path (extension available and preloaded)."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                  AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'"""
        )
    )


async def test_native_partitions_without_timescaledb(conn: asyncpg.Connection) -> None:
    """Without TimescaleDB the table stays natively partitioned with the usual window of months."""
    if await timescale_loaded(conn):
        pytest.skip("timescaledb is loaded here: 0051 converted the table to a hypertable")
    assert (
        await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'signals.tp_capital_signals'::regclass")
        == "p"
    )
    months = await conn.fetchval(
        """SELECT count(*) FROM pg_inherits WHERE inhparent = 'signals.tp_capital_signals'::regclass"""
    )
    assert months >= 5  # previous month .. three months ahead
    # ensure_partitions is a no-op on a table that is not natively partitioned (e.g. a hypertable)
    assert await conn.fetchval("SELECT signals.ensure_partitions('workspace.workspace_items', now(), now())") == 0
    assert (
        await conn.fetchval(
            "SELECT signals.ensure_partitions('signals.tp_capital_signals', '2020-01-01', '2020-02-15')"
        )
        == 2
    )


async def test_timescaledb_hypertable_and_policies(conn: asyncpg.Connection) -> None:
    """With TimescaleDB: a hypertable on ts (7-day chunks), compression after 30 days, retention 5 years."""
    available = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')")
    if not available:
        pytest.skip("timescaledb is not in pg_available_extensions on this server: native partitions are used")
    if not await timescale_loaded(conn):
        pytest.skip("timescaledb is installed but not in shared_preload_libraries: native partitions are used")
    hypertable = await conn.fetchrow(
        """SELECT compression_enabled FROM timescaledb_information.hypertables
            WHERE hypertable_schema = 'signals' AND hypertable_name = 'tp_capital_signals'"""
    )
    assert hypertable is not None
    assert hypertable["compression_enabled"]
    jobs = await conn.fetch(
        """SELECT proc_name, config FROM timescaledb_information.jobs
            WHERE hypertable_schema = 'signals' AND hypertable_name = 'tp_capital_signals'"""
    )
    assert {j["proc_name"] for j in jobs} == {"policy_compression", "policy_retention"}
    await conn.execute(
        f"INSERT INTO signals.tp_capital_signals ({SIGNAL_COLUMNS}, row_hash) "
        "VALUES (now(), 'k', 'TP', 'PETR4', 1, 2, 3, NULL, NULL, 0.5, 'telegram', '\\x00')"
    )
    assert await conn.fetchval("SELECT sum(signals) FROM reporting.signals_by_channel") == 1
