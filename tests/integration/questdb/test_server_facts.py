"""What the real QuestDB does where the poller depends on it, on the line upstream runs and on the
current release, through syncd's own readers on both transports. The README's "QuestDB, measured"
section states these facts; a new pinned version that behaves otherwise fails here first.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from syncd.config import QuestdbSettings
from syncd.errors import TableMissing
from syncd.questdb.reader import HttpReader, PgWireReader, QuestdbReader
from syncd.questdb.sql import Cursor, PageSpec, backlog_query, next_page
from tests.questdb_server import QUESTDB_LATEST, QUESTDB_SUITE, QuestdbServer
from tests.questdb_upstream import Signal, Upstream, iso_us

NOW = datetime.now(UTC).replace(microsecond=0)
TIE = (NOW - timedelta(hours=2)).replace(minute=0, second=0)
# 8.2.0's tables() keeps answering the id of the table as it was before a rebuild; 9.x's does not.
TABLES_ID_FOLLOWS_REBUILD = {QUESTDB_SUITE: False, QUESTDB_LATEST: True}


@pytest.fixture(params=["suite", "latest"])
def server(request: pytest.FixtureRequest) -> QuestdbServer:
    """Each fact on both pinned versions (the latest server is shared with the end-to-end test)."""
    name = "questdb_server" if request.param == "suite" else "questdb_latest"
    found: QuestdbServer = request.getfixturevalue(name)
    return found


@pytest.fixture
async def upstream(server: QuestdbServer) -> AsyncIterator[Upstream]:
    """Upstream's tables afresh on the version under test."""
    async with Upstream(server.http_port) as writer:
        await writer.reset()
        yield writer


@pytest.fixture(params=["http", "pg"])
async def reader(request: pytest.FixtureRequest, server: QuestdbServer) -> AsyncIterator[QuestdbReader]:
    """syncd's reader of the transport under test."""
    settings = QuestdbSettings(
        http_port=server.http_port, pg_port=server.pg_port, transport=request.param, request_timeout=10.0
    )
    made: QuestdbReader = HttpReader(settings) if request.param == "http" else PgWireReader(settings)
    try:
        yield made
    finally:
        await made.close()


async def test_upstream_tables_are_wal_tables_partitioned_by_day(upstream: Upstream) -> None:
    """Upstream's DDL has no WAL clause; the server makes all four WAL tables, the rebuilt one too."""
    await upstream.insert(Signal(NOW))
    await upstream.applied()
    await upstream.delete((await upstream.keys())[0])
    rows = await upstream.rows("SELECT table_name, walEnabled, partitionBy, designatedTimestamp FROM tables()")
    assert sorted(map(tuple, rows)) == [
        ("telegram_bots", True, "DAY", "updated_at"),
        ("telegram_channels", True, "DAY", "updated_at"),
        ("tp_capital_signals", True, "DAY", "ts"),
        ("tp_capital_signals_deleted", True, "DAY", "ts"),
    ]


async def test_ties_read_in_commit_order_and_page_by_ingested_at(upstream: Upstream, reader: QuestdbReader) -> None:
    """Rows sharing one `ts` come back in commit order under ORDER BY ts; paging the group by
    `ingested_at > last ORDER BY ingested_at LIMIT n` (the poller's group query) reads each once."""
    for i in range(12):
        await upstream.insert(Signal(TIE, asset=f"TIE{i:02d}"))
    await upstream.applied()
    lit = f"'{iso_us(TIE)}'"
    first = await reader.query(f"SELECT asset FROM tp_capital_signals WHERE ts = {lit} ORDER BY ts LIMIT 5")
    assert [r[0] for r in first.rows] == [f"TIE{i:02d}" for i in range(5)]
    seen: list[str] = []
    last = "1970-01-01T00:00:00.000000Z"
    while True:
        page = await reader.query(
            f"SELECT asset, ingested_at FROM tp_capital_signals WHERE ts = {lit} "
            f"AND ingested_at > '{last}' ORDER BY ingested_at LIMIT 5"
        )
        if not page.rows:
            break
        seen += [r[0] for r in page.rows]
        last = iso_us(page.rows[-1][1])
    assert seen == [f"TIE{i:02d}" for i in range(12)]


async def test_backlog_count_inside_a_tie_group(upstream: Upstream, reader: QuestdbReader) -> None:
    """The catch-up's `count(*)` (`backlog_query`): over a group being paged, the OR of the rest of the
    group and what lies above it still counts exactly the rows `next_page` has yet to read."""
    for i in range(6):
        await upstream.insert(Signal(TIE, asset=f"TIE{i}"))
    await upstream.insert(Signal(TIE, raw_message="legacy"), ingested=False)
    for i in range(3):
        await upstream.insert(Signal(TIE + timedelta(minutes=i + 1), asset=f"UP{i}"))
    await upstream.applied()
    spec = PageSpec("tp_capital_signals", ("ts", "asset", "ingested_at"), "ts", "ingested_at")
    hi, cursor, left, more = NOW, Cursor(TIE - timedelta(seconds=1)), 10, True
    while more:
        assert (await reader.query(backlog_query(spec, cursor, hi))).value(int) == left, cursor
        rows, cursor, more = await next_page(reader, spec, cursor, hi, 2)
        left -= len(rows)
    assert left == 0


async def test_rebuilt_table_is_complete_once_its_wal_is_applied(upstream: Upstream) -> None:
    """After upstream's RENAME the table may read empty until the CTAS rows are applied: whenever
    wal_tables() says writerTxn = sequencerTxn, every surviving row is there, and sequencerTxn has
    started again below the old table's."""
    base = NOW - timedelta(minutes=30)
    for i in range(20):
        await upstream.insert(Signal(base + timedelta(seconds=i)))
    await upstream.applied()
    wal = "SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = 'tp_capital_signals'"
    before = (await upstream.rows(wal))[0][1]
    await upstream.delete((await upstream.keys())[0])
    while True:
        writer, sequencer = (await upstream.rows(wal))[0]
        count = (await upstream.rows("SELECT count(*) FROM tp_capital_signals"))[0][0]
        if writer >= sequencer:
            # Read after the WAL check: a settled table must already hold every row.
            assert count == 19
            break
    assert sequencer < before


async def test_tables_id_across_a_rebuild(upstream: Upstream, server: QuestdbServer) -> None:
    """tables().id names a new table after upstream's rebuild on 9.x, the old one on 8.2.0."""
    await upstream.insert(Signal(NOW))
    await upstream.applied()
    query = "SELECT id FROM tables() WHERE table_name = 'tp_capital_signals'"
    before = (await upstream.rows(query))[0][0]
    await upstream.delete((await upstream.keys())[0])
    await upstream.applied()
    after = (await upstream.rows(query))[0][0]
    assert (after != before) is TABLES_ID_FOLLOWS_REBUILD[server.version]


async def test_types_nulls_nan_and_precision(upstream: Upstream, reader: QuestdbReader) -> None:
    """NaN, Infinity and null doubles read as None, '' stays '', null symbols are None, `ts` keeps
    upstream's milliseconds and `ingested_at` the server's microseconds, both as aware UTC."""
    await upstream.insert(
        Signal(
            NOW - timedelta(seconds=1, microseconds=250_000),
            buy_min=math.nan,
            buy_max=math.inf,
            target_1=None,
            raw_message="",
        )
    )
    await upstream.exec(
        f"INSERT INTO tp_capital_signals (ts, raw_message, ingested_at) VALUES ('{iso_us(NOW)}', 'x', now())"
    )
    await upstream.insert(Signal(NOW + timedelta(seconds=1)), ingested=False)
    await upstream.applied()
    result = await reader.query(
        "SELECT ts, asset, buy_min, buy_max, target_1, raw_message, ingested_at FROM tp_capital_signals ORDER BY ts"
    )
    assert result.types == (
        "TIMESTAMP",
        "SYMBOL" if reader.transport == "http" else "VARCHAR",
        "DOUBLE",
        "DOUBLE",
        "DOUBLE",
        "STRING" if reader.transport == "http" else "VARCHAR",
        "TIMESTAMP",
    )
    odd, bare, legacy = result.rows
    assert odd[0] == NOW - timedelta(seconds=1, microseconds=250_000)
    assert odd[2:6] == (None, None, None, "")
    assert odd[6].tzinfo is UTC
    assert abs(odd[6] - datetime.now(UTC)) < timedelta(minutes=5)
    assert bare[1] is None
    assert bare[2] is None
    assert legacy[6] is None


async def test_latest_on_updated_at_partition_by_id(upstream: Upstream, reader: QuestdbReader) -> None:
    """The versioned tables' current state: one row per id, the newest `updated_at`, tombstones kept."""
    await upstream.append_bot("bot-1", "active", NOW - timedelta(minutes=10))
    await upstream.append_bot("bot-2", "active", NOW - timedelta(minutes=9))
    await upstream.append_bot("bot-1", "inactive", NOW - timedelta(minutes=5))
    await upstream.append_bot("bot-2", "deleted", NOW - timedelta(minutes=1))
    await upstream.applied()
    result = await reader.query("SELECT id, status, updated_at FROM telegram_bots LATEST ON updated_at PARTITION BY id")
    assert sorted(r[:2] for r in result.rows) == [("bot-1", "inactive"), ("bot-2", "deleted")]


async def test_a_table_missing_mid_rebuild_is_table_missing(upstream: Upstream, reader: QuestdbReader) -> None:
    """Between upstream's DROP and RENAME the table does not exist: both transports raise
    TableMissing (HTTP 400 and PG wire SQLSTATE 00000 carry the same text), which is retried."""
    await upstream.insert(Signal(NOW))
    await upstream.applied()
    await upstream.copy_to_deleted((await upstream.keys())[0])
    await upstream.rebuild_without((await upstream.keys())[0])
    with pytest.raises(TableMissing) as missing:
        await reader.query(f"SELECT ts FROM tp_capital_signals WHERE ts > '{iso_us(NOW - timedelta(days=1))}' LIMIT 5")
    assert missing.value.table == "tp_capital_signals"
    await upstream.finish_rebuild()
    await upstream.applied()
    assert (await reader.query("SELECT count(*) FROM tp_capital_signals_deleted")).rows == [(1,)]


async def test_upstream_delete_keeps_rows_without_ingested_at(upstream: Upstream) -> None:
    """`ingested_at != X` is true for NULL in QuestDB, so a delete keeps the legacy rows."""
    await upstream.insert(Signal(NOW - timedelta(minutes=2)), ingested=False)
    await upstream.insert(Signal(NOW - timedelta(minutes=1)))
    await upstream.applied()
    await upstream.delete((await upstream.keys())[0])
    await upstream.applied()
    assert await upstream.rows("SELECT count(*) FROM tp_capital_signals WHERE ingested_at IS NULL") == [[1]]
    assert await upstream.rows("SELECT count(*) FROM tp_capital_signals") == [[1]]


async def test_pg_wire_bind_parameters(upstream: Upstream, server: QuestdbServer) -> None:
    """psycopg binds naive and aware datetimes, text and ints; asyncpg refuses an aware datetime for
    QuestDB's `timestamp` (client side) and binds a naive one. Differently typed `$1` on one
    connection work (7.4 failed there)."""
    await upstream.insert(Signal(TIE))
    await upstream.applied()
    naive = TIE.replace(tzinfo=None)
    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=server.pg_port, user="admin", password="quest", dbname="qdb", autocommit=True
    ) as conn:
        for value in (naive, TIE):
            cur = await conn.execute("SELECT count(*) FROM tp_capital_signals WHERE ts = %s", (value,))
            assert await cur.fetchall() == [(1,)]
        cur = await conn.execute("SELECT asset FROM tp_capital_signals WHERE asset = %s LIMIT %s", ("BEEFW655", 5))
        assert await cur.fetchall() == [("BEEFW655",)]
    conn2 = await asyncpg.connect(host="127.0.0.1", port=server.pg_port, user="admin", password="quest", database="qdb")
    try:
        assert await conn2.fetchval("SELECT count(*) FROM tp_capital_signals WHERE ts = $1", naive) == 1
        assert await conn2.fetchval("SELECT count(*) FROM tp_capital_signals WHERE asset = $1", "BEEFW655") == 1
        with pytest.raises(asyncpg.DataError, match="offset-naive and offset-aware"):
            await conn2.fetchval("SELECT count(*) FROM tp_capital_signals WHERE ts = $1", TIE)
    finally:
        await conn2.close()
