"""The QuestDB source against the real QuestDB and a real PostgreSQL, through the real StreamRunner,
on both transports. QuestDB is written the way tp-capital writes it (tests/questdb_upstream.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.questdb import source as source_module
from syncd.questdb.reader import format_timestamp, make_reader, parse_timestamp
from syncd.questdb.source import SignalsSource, VersionedSource
from syncd.questdb.sql import Cursor, PageSpec, next_page
from syncd.sink.postgres import PostgresSink
from syncd.stream import StreamState
from tests.integration.conftest import eventually, running
from tests.questdb_faults import FaultyHttp, TcpProxy
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import Signal, Upstream

NOW = datetime.now(UTC).replace(microsecond=0)
SIGNALS = "signals.tp_capital_signals"
ROOT = Path(__file__).resolve().parents[3]


async def source_rows(q: Upstream) -> set[tuple[datetime, str | None]]:
    """(ts, ingested_at) of every row QuestDB shows."""
    return {(parse_timestamp(ts), ing) for ts, ing in await q.rows("SELECT ts, ingested_at FROM tp_capital_signals")}


async def pg_rows(pool: asyncpg.Pool, *, live: bool = True) -> set[tuple[datetime, str | None]]:
    """(ts, ingested_at) of PG's rows (live ones unless told otherwise)."""
    rows = await pool.fetch(f"SELECT ts, ingested_at FROM {SIGNALS}" + (" WHERE deleted_at IS NULL" if live else ""))
    return {(r["ts"], None if r["ingested_at"] is None else format_timestamp(r["ingested_at"])) for r in rows}


async def in_sync(q: Upstream, pool: asyncpg.Pool) -> bool:
    """PG's live rows equal everything committed to QuestDB (its WAL applied first), no duplicates."""
    await q.applied()
    total = await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE deleted_at IS NULL")
    source = await source_rows(q)
    return bool(total == len(source) and await pg_rows(pool) == source)


def sample(metric: object, **labels: str) -> float:
    """Current value of a labelled metric."""
    return float(metric.labels(**labels)._value.get())  # type: ignore[attr-defined]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("page", [1, 2, 3, 7, 50])
async def test_pages_never_skip_or_duplicate_equal_timestamps(questdb: Upstream, settings: QuestdbSettings,
                                                              page: int) -> None:
    """Groups of 1..9 rows on one ts, NULL ingested_at mixed in, read by next_page: each row once."""
    n = 0
    for g in range(10):
        for k in range(g % 9 + 1):
            await questdb.insert(Signal(NOW - timedelta(minutes=30, seconds=-g), asset=f"R{n}"), ingested=k != 4)
            n += 1
    await questdb.applied()
    reader = make_reader(settings)
    spec = PageSpec("tp_capital_signals", ("ts", "asset", "ingested_at"), "ts", "ingested_at")
    cursor, seen, more = Cursor(), [], True
    try:
        while more:
            rows, cursor, more = await next_page(reader, spec, cursor, NOW, page)
            assert len(rows) <= page or rows[0][2] is None  # a group's NULL-tie rows come at once
            seen += [r[1] for r in rows]
    finally:
        await reader.close()
    assert sorted(seen) == sorted(f"R{i}" for i in range(n))


async def test_rows_sharing_one_ts_split_across_pages(questdb: Upstream, settings: QuestdbSettings,
                                                      sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """12 rows on one ts and 7 on the next, pages of 5, a legacy row without ingested_at: none
    skipped or doubled, then a later group larger than a page."""
    t1, t2 = NOW - timedelta(minutes=5), NOW - timedelta(minutes=4)
    for i in range(12):
        await questdb.insert(Signal(t1, asset=f"AAAA{i}"))
    for i in range(7):
        await questdb.insert(Signal(t2, asset=f"BBBB{i}"))
    await questdb.insert(Signal(t1, raw_message="legacy row"), ingested=False)
    async with running(SignalsSource(settings), sink):
        await eventually(lambda: in_sync(questdb, pool), what="PG equal to QuestDB")
        for i in range(6):
            await questdb.insert(Signal(NOW - timedelta(minutes=3), asset=f"CCCC{i}"))
        await eventually(lambda: in_sync(questdb, pool), what="second group")
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE signal_key LIKE 'h:%'") == 1


async def test_catch_up_counts_its_backlog_exactly_page_by_page(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up counts the rows still to read before each page (re-count allowed every page
    here): the total is exactly the rows there are at every page, a group larger than a page and
    its legacy NULL-tie row included, while read grows to it; /status's percent climbs to 100."""
    monkeypatch.setattr(source_module, "ESTIMATE_SECONDS", 0.0)
    group = NOW - timedelta(minutes=20)
    for i in range(9):
        await questdb.insert(Signal(NOW - timedelta(minutes=30, seconds=-i), asset=f"P{i}"))
    for i in range(8):
        await questdb.insert(Signal(group, asset=f"G{i}"))
    await questdb.insert(Signal(group, raw_message="legacy row"), ingested=False)
    await questdb.insert(Signal(NOW - timedelta(minutes=10)))
    await questdb.applied()
    rows = 19
    source = SignalsSource(settings)
    state = StreamState(source.source, source.stream, health=source)
    await source.open(None)
    seen: list[tuple[int, int | None, float | None]] = []
    try:
        async with aclosing(source.batches()) as batches:
            async for batch in batches:
                if source.caught_up:
                    break
                seen.append((source.progress.read, source.progress.total, state.catch_up()["percent"]))
                await sink.apply(batch)
                source.committed(batch)
    finally:
        await source.close()
    assert len(seen) >= rows // settings.page_size
    assert {total for _, total, _ in seen} == {rows}
    reads = [read for read, _, _ in seen]
    assert reads == sorted(reads)
    assert reads[-1] == rows
    percents = [p for _, _, p in seen]
    assert percents == sorted(percents)
    assert 0 < (percents[0] or 0) < 50
    assert percents[-1] == 99.9  # every row read; short of caught up it never says 100


async def test_versioned_catch_up_total_is_its_one_read(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink
) -> None:
    """A versioned table catches up in one read of the latest versions: its total is their number."""
    await questdb.append_bot("bot-1", "active", NOW - timedelta(minutes=10), token="T")
    await questdb.append_bot("bot-1", "inactive", NOW - timedelta(minutes=5), token="T")
    await questdb.append_bot("bot-2", "active", NOW - timedelta(minutes=9), token="T")
    await questdb.applied()
    async with running(VersionedSource(settings, "telegram_bots"), sink) as runner:
        await eventually(lambda: _true(runner.state.caught_up), what="caught up")
        assert runner.state.as_json()["catch_up"] == {
            "read": 2, "staged": None, "applied": 2, "total": 2, "percent": 100.0, "eta_seconds": 0.0}


async def test_late_rows_inside_lag_window_are_applied_and_counted(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool
) -> None:
    """A row whose ts lies below the watermark (QuestDB merges it in place) is found by the rescan
    and counted as late."""
    await questdb.insert(Signal(NOW - timedelta(minutes=2)))
    await questdb.insert(Signal(NOW - timedelta(minutes=1)))
    source = SignalsSource(settings)
    before = sample(metrics.LATE_ROWS, stream=source.stream)
    async with running(source, sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="initial rows")
        await eventually(lambda: _true(runner.state.caught_up), what="caught up")
        await eventually(lambda: _true(len(source._history) > 0), what="poll history")
        await questdb.insert(Signal(NOW - timedelta(minutes=1, seconds=30), asset="LATE1"))
        await eventually(lambda: in_sync(questdb, pool), what="late row applied")
        await eventually(lambda: _true(sample(metrics.LATE_ROWS, stream=source.stream) >= before + 1),
                         what="late row counted")


async def _reconciled(checkpoint: object) -> dict[str, object] | None:
    report = (checkpoint or {}).get("reconcile") if isinstance(checkpoint, dict) else None
    return report if report and report.get("reason") != "baseline" else None


async def test_upstream_delete_mid_poll(questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink,
                                        pool: asyncpg.Pool, dsn: str) -> None:
    """Upstream's delete: the table is missing between DROP and RENAME (transient, source_up 0),
    then comes back rebuilt. The deleted row keeps its PG row with deleted_at, the rest stays, and
    the reconcile the rebuild schedules waits for the WAL and finds nothing to repair."""
    for i in range(6):
        await questdb.insert(Signal(NOW - timedelta(minutes=10 - i), asset=f"DEL{i}"))
    await questdb.applied()
    keys = await questdb.keys()
    source = SignalsSource(settings, pg_dsn=dsn)
    async with running(source, sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="initial rows")
        await questdb.copy_to_deleted(keys[2])
        await questdb.rebuild_without(keys[2])
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 0), what="source down")
        await questdb.finish_rebuild()
        await eventually(lambda: in_sync(questdb, pool), what="rows after rebuild")
        deleted = await eventually(
            lambda: pool.fetchval(f"SELECT deleted_at FROM {SIGNALS} WHERE signal_key = $1", keys[2]),
            what="deleted_at set")
        assert deleted is not None
        report = await eventually(lambda: _reconciled(runner.state.checkpoint), what="reconcile result")
        assert report["reason"] == "identity"
        assert report["mismatched_days"] == []
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="source up")
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == 6


@pytest.fixture
async def proxy(settings: QuestdbSettings) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the transport under test."""
    front = TcpProxy(settings.http_port if settings.transport == "http" else settings.pg_port)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


async def test_down_and_hanging_server_lose_nothing(questdb: Upstream, settings: QuestdbSettings,
                                                    proxy: TcpProxy, sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """QuestDB hanging (accepts, never answers) and down (connections reset, then refused) are
    retried on either transport. A hang is reported down within the timeouts, every attempt
    bounded by request_timeout (a query) or connect_timeout (a reconnect): over PG wire psycopg's
    cancel request through the hung server added 10 s per attempt. The stream recovers when the
    server answers again, and every row written meanwhile arrives."""
    port = "http_port" if settings.transport == "http" else "pg_port"
    source = SignalsSource(settings.model_copy(update={port: proxy.port}))
    attempt = settings.request_timeout + settings.connect_timeout
    pause = 1.0  # the backoff between the first attempts (0.5 s deferred, 0.2 s doubling)
    await questdb.insert(Signal(NOW - timedelta(minutes=9)))
    async with running(source, sink):
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        retries = sample(metrics.RETRIES, component="questdb")
        proxy.hang()
        await questdb.insert(Signal(NOW - timedelta(minutes=8)))
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 0),
                         timeout=attempt + pause, what="source down within one attempt's timeouts")
        await eventually(lambda: _true(sample(metrics.RETRIES, component="questdb") >= retries + 4),
                         timeout=4 * (attempt + pause), what="four attempts, each within its timeouts")
        await proxy.restore()
        await eventually(lambda: in_sync(questdb, pool), what="rows once the server answers again")
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up after hang")
        await proxy.cut()
        for i in range(4):
            await questdb.insert(Signal(NOW - timedelta(minutes=6, seconds=i)))
        await proxy.restore()
        await eventually(lambda: in_sync(questdb, pool), timeout=20, what="after the outage")
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up")


async def test_500_html_and_wrong_shape_answers_are_retried(questdb: Upstream, questdb_server: QuestdbServer,
                                                            sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """What only a fake can produce over HTTP: 500s, a proxy's HTML page, JSON of the wrong shape.
    Each is a transient failure (source_up 0, retried), never rows; then every row arrives."""
    front = FaultyHttp(questdb_server.http_port)
    await front.start()
    settings = QuestdbSettings(http_port=front.port, poll_interval=0.05, safety_lag=0.5, page_size=5,
                               request_timeout=2.0)
    source = SignalsSource(settings)
    try:
        await questdb.insert(Signal(NOW - timedelta(minutes=9)))
        async with running(source, sink):
            await eventually(lambda: in_sync(questdb, pool), what="first row")
            for i, fault in enumerate(("500", "html", "shape")):
                front.fail(3, fault)  # type: ignore[arg-type]
                await questdb.insert(Signal(NOW - timedelta(minutes=8 - i), asset=f"F{fault}"))
                await eventually(lambda: _true(not front.pending), what=f"{fault} answers served")
                await eventually(lambda: in_sync(questdb, pool), what=f"rows after {fault}")
            await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up")
    finally:
        await front.stop()
    assert front.faults_served == 9
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE asset = 'Fshape'") == 1


async def test_nan_null_doubles_and_empty_messages(questdb: Upstream, settings: QuestdbSettings,
                                                   sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """NaN reads as null on both transports and lands as NULL; NULL doubles and '' messages survive."""
    await questdb.insert(Signal(NOW - timedelta(minutes=3), asset="NAN", buy_min=float("nan"), raw_message=""))
    await questdb.insert(Signal(NOW - timedelta(minutes=2), asset="NULL", buy_min=None, raw_message="it's"))
    async with running(SignalsSource(settings), sink):
        await eventually(lambda: in_sync(questdb, pool), what="rows")
    rows = {r["asset"]: r for r in await pool.fetch(f"SELECT * FROM {SIGNALS}")}
    assert rows["NAN"]["buy_min"] is None
    assert rows["NAN"]["raw_message"] == ""
    assert rows["NULL"]["buy_min"] is None
    assert rows["NULL"]["raw_message"] == "it's"


async def test_versioned_tables_latest_version_tombstone_and_no_token(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool
) -> None:
    """Latest version per id wins, status='deleted' is kept as a tombstone, the token never leaves QuestDB."""
    await questdb.append_bot("bot-1", "active", NOW - timedelta(minutes=10), token="SECRET-1")
    await questdb.append_bot("bot-1", "inactive", NOW - timedelta(minutes=5), token="SECRET-1")
    await questdb.append_bot("bot-2", "active", NOW - timedelta(minutes=9), token="SECRET-2")
    source = VersionedSource(settings, "telegram_bots")
    async with running(source, sink):
        await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM signals.telegram_bots"), what="bots")
        await questdb.append_bot("bot-2", "deleted", NOW - timedelta(minutes=1), token="SECRET-2")
        await eventually(lambda: pool.fetchval(
            "SELECT status = 'deleted' FROM signals.telegram_bots WHERE id = 'bot-2'"), what="tombstone")
    assert await pool.fetchval("SELECT status FROM signals.telegram_bots WHERE id = 'bot-1'") == "inactive"
    dump = str([tuple(r) for r in await pool.fetch("SELECT * FROM signals.telegram_bots")])
    assert "SECRET" not in dump


@pytest.mark.e2e
async def test_backfill_kill9_and_resume_equals_source(questdb: Upstream, settings: QuestdbSettings,
                                                       dsn: str, pool: asyncpg.Pool) -> None:
    """`syncd backfill` killed with SIGKILL mid-run, then run again: PG equals the source, no duplicates."""
    rows = 30_000
    await questdb.generate(rows, NOW - timedelta(days=3), 7_000_000)
    env = {**os.environ, "SYNCD_PG_DSN": dsn, "SYNCD_QUESTDB_HTTP_PORT": str(settings.http_port),
           "SYNCD_QUESTDB_PG_PORT": str(settings.pg_port), "SYNCD_QUESTDB_TRANSPORT": settings.transport}
    cmd = [str(Path(sys.executable).parent / "syncd"), "backfill", "questdb", "--table",
           "tp_capital_signals", "--page-size", "500", "--no-progress"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        await eventually(lambda: pool.fetchval(f"SELECT count(*) > 3000 FROM {SIGNALS}"), timeout=60,
                         what="backfill under way")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    partial = await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}")
    assert partial < rows
    second = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=True, cwd=ROOT)
    summary = second.stdout.decode().strip().splitlines()[-1]
    assert '"resumed":true' in summary
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == rows
    assert await pool.fetchval(f"SELECT count(DISTINCT (ts, signal_key)) FROM {SIGNALS}") == rows
    assert await pg_rows(pool) == await source_rows(questdb)
    checkpoint = await pool.fetchval(
        "SELECT position FROM syncd.checkpoints WHERE stream = 'backfill:questdb:tp_capital_signals'")
    assert checkpoint["done"] is True


async def test_verify_signals_per_day_names_the_day_that_differs(questdb: Upstream, settings: QuestdbSettings,
                                                                sink: PostgresSink, pool: asyncpg.Pool,
                                                                dsn: str) -> None:
    """`syncd verify tp_capital_signals`: per day, counts and hashes; a changed PG row marks only its day."""
    from syncd.cutover.verify import verify_signals

    yesterday = NOW - timedelta(days=1)
    for i in range(3):
        await questdb.insert(Signal(yesterday.replace(hour=10, minute=i)))
        await questdb.insert(Signal(NOW - timedelta(seconds=30 + i)))
    async with running(SignalsSource(settings, pg_dsn=dsn), sink):
        await eventually(lambda: in_sync(questdb, pool), what="rows copied")
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert [(d.source_rows, d.pg_rows, d.clean) for d in days] == [(3, 3, True), (3, 3, True)]

    await pool.execute(f"UPDATE {SIGNALS} SET asset = 'TAMPERED' WHERE ts = $1", yesterday.replace(hour=10, minute=1))
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert [(d.day, d.clean) for d in days] == [(yesterday.date().isoformat(), False), (NOW.date().isoformat(), True)]
