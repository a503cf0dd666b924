"""The QuestDB source against the emulator and a real PostgreSQL, through the real StreamRunner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import asyncpg
import pytest

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.questdb.reader import PgWireReader, format_timestamp
from syncd.questdb.source import SignalsSource, VersionedSource
from syncd.sink.postgres import PostgresSink
from tests.fakes.questdb import QuestDBEmulator
from tests.fakes.questdb_sql import EPOCH
from tests.integration.conftest import eventually, running

# syncd/stream.py passes tenacity's deprecated `initial=` (lead's file; reported): not ours to fail on.

NOW = datetime.now(UTC).replace(microsecond=0)
_ingest = count(1)
SIGNALS = "signals.tp_capital_signals"


def insert(q: QuestDBEmulator, ts: datetime, *, asset: str = "BEEFW655", buy_min: str = "1.5",
           message: str = "COMPRA BEEFW655", ingested: bool = True) -> str:
    """Insert one signal the way tp-capital does (one INSERT … VALUES per request); returns its key."""
    at = datetime.now(UTC) + timedelta(microseconds=next(_ingest))  # server now(), unique
    stamp = f"to_timestamp('{format_timestamp(at)}', 'yyyy-MM-ddTHH:mm:ss.SSSUUUZ')" if ingested else "null"
    q.run_sql(
        "INSERT INTO tp_capital_signals (ts, channel, signal_type, asset, buy_min, buy_max, target_1, "
        "target_2, target_final, stop, raw_message, source, ingested_at) VALUES "
        f"(to_timestamp('{format_timestamp(ts)}', 'yyyy-MM-ddTHH:mm:ss.SSSZ'), '@TPCapital_Oficial', "
        f"'Swing Trade', '{asset}', {buy_min}, 2.0, 2.5, 3.0, 4.0, 1.0, '{message}', 'forwarder', {stamp})"
    )
    return format_timestamp(at)


def source_rows(q: QuestDBEmulator) -> set[tuple[datetime, str | None]]:
    """(ts, ingested_at) of every row QuestDB holds."""
    table = q.store.tables["tp_capital_signals"]
    ts, ing = table.col("ts"), table.col("ingested_at")
    return {(EPOCH + timedelta(microseconds=r[ts]),
             None if r[ing] is None else format_timestamp(EPOCH + timedelta(microseconds=r[ing])))
            for r in table.rows}


async def pg_rows(pool: asyncpg.Pool, *, live: bool = True) -> set[tuple[datetime, str | None]]:
    """(ts, ingested_at) of PG's rows (live ones unless told otherwise)."""
    rows = await pool.fetch(f"SELECT ts, ingested_at FROM {SIGNALS}" + (" WHERE deleted_at IS NULL" if live else ""))
    return {(r["ts"], None if r["ingested_at"] is None else format_timestamp(r["ingested_at"])) for r in rows}


async def in_sync(q: QuestDBEmulator, pool: asyncpg.Pool) -> bool:
    """PG's live rows equal QuestDB's, with no duplicates."""
    total = await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE deleted_at IS NULL")
    return total == len(q.store.tables["tp_capital_signals"].rows) and await pg_rows(pool) == source_rows(q)


def sample(metric: object, **labels: str) -> float:
    """Current value of a labelled metric."""
    return float(metric.labels(**labels)._value.get())  # type: ignore[attr-defined]


async def test_rows_sharing_one_ts_split_across_pages(questdb: QuestDBEmulator, settings: QuestdbSettings,
                                                      sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """12 rows on one ts and 7 on the next, pages of 5, ties in random order: none skipped or doubled."""
    questdb.store.shuffle_ties = True
    t1, t2 = NOW - timedelta(minutes=5), NOW - timedelta(minutes=4)
    for i in range(12):
        insert(questdb, t1, asset=f"AAAA{i}")
    for i in range(7):
        insert(questdb, t2, asset=f"BBBB{i}")
    insert(questdb, t1, ingested=False, message="legacy row")
    async with running(SignalsSource(settings), sink):
        await eventually(lambda: in_sync(questdb, pool), what="PG equal to QuestDB")
        for i in range(6):  # a second group arriving later, again larger than a page
            insert(questdb, NOW - timedelta(minutes=3), asset=f"CCCC{i}")
        await eventually(lambda: in_sync(questdb, pool), what="second group")
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE signal_key LIKE 'h:%'") == 1


async def test_late_rows_inside_lag_window_are_applied_and_counted(
    questdb: QuestDBEmulator, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool
) -> None:
    """A row inserted below the watermark (O3) is found by the rescan and counted as late."""
    insert(questdb, NOW - timedelta(minutes=2))
    insert(questdb, NOW - timedelta(minutes=1))
    source = SignalsSource(settings)
    before = sample(metrics.LATE_ROWS, stream=source.stream)
    async with running(source, sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="initial rows")
        await eventually(lambda: _true(runner.state.caught_up), what="caught up")
        await eventually(lambda: _true(len(source._history) > 0), what="poll history")
        insert(questdb, NOW - timedelta(minutes=1, seconds=30), asset="LATE1")
        await eventually(lambda: in_sync(questdb, pool), what="late row applied")
        await eventually(lambda: _true(sample(metrics.LATE_ROWS, stream=source.stream) >= before + 1),
                         what="late row counted")


async def _true(value: bool) -> bool:
    return value


async def upstream_delete(q: QuestDBEmulator, ingested_at: str, *, rename: bool = True) -> None:
    """tp-capital's delete: copy to _deleted, then rebuild the table by CREATE AS / DROP / RENAME."""
    cols = ("ts, channel, signal_type, asset, buy_min, buy_max, target_1, target_2, target_final, stop, "
            "raw_message, source, ingested_at")
    match = f"ingested_at = to_timestamp('{ingested_at}', 'yyyy-MM-ddTHH:mm:ss.SSSUUUZ')"
    q.run_sql(f"INSERT INTO tp_capital_signals_deleted SELECT {cols}, now() FROM tp_capital_signals WHERE {match}")
    q.run_sql(f"CREATE TABLE tp_capital_signals_tmp AS (SELECT {cols} FROM tp_capital_signals "
              f"WHERE ingested_at != to_timestamp('{ingested_at}', 'x') OR ingested_at = null) "
              "TIMESTAMP(ts) PARTITION BY DAY")
    q.run_sql("DROP TABLE tp_capital_signals")
    if rename:
        q.run_sql("RENAME TABLE tp_capital_signals_tmp TO tp_capital_signals")


async def test_delete_with_rebuild_mid_poll(questdb: QuestDBEmulator, settings: QuestdbSettings,
                                            sink: PostgresSink, pool: asyncpg.Pool, dsn: str) -> None:
    """The table vanishes mid-poll (transient, source_up 0), comes back with a new id: the deleted row
    keeps its PG row with deleted_at, the rest stays, and a reconcile runs and reports."""
    keys = [insert(questdb, NOW - timedelta(minutes=10 - i)) for i in range(6)]
    source = SignalsSource(settings, pg_dsn=dsn)
    async with running(source, sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="initial rows")
        gone = asyncio.Event()

        async def rebuild(_: str) -> None:
            await upstream_delete(questdb, keys[2], rename=False)
            gone.set()

        questdb.on_query = ("FROM tp_capital_signals WHERE ts >", rebuild)
        insert(questdb, NOW - timedelta(minutes=1))
        await gone.wait()
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 0), what="source down")
        questdb.run_sql("RENAME TABLE tp_capital_signals_tmp TO tp_capital_signals")
        await eventually(lambda: in_sync(questdb, pool), what="rows after rebuild")
        deleted = await eventually(
            lambda: pool.fetchval(f"SELECT deleted_at FROM {SIGNALS} WHERE signal_key = $1", keys[2]),
            what="deleted_at set")
        assert deleted is not None
        report = await eventually(lambda: _reconciled(runner.state.checkpoint), what="reconcile result")
        assert report["reason"] == "identity"
        assert report["mismatched_days"] == []
    assert sample(metrics.SOURCE_UP, stream=source.stream) == 1


async def _reconciled(checkpoint: object) -> dict[str, object] | None:
    report = (checkpoint or {}).get("reconcile") if isinstance(checkpoint, dict) else None
    return report if report and report.get("reason") != "baseline" else None


async def test_down_500s_and_timeouts_lose_nothing(questdb: QuestDBEmulator, settings: QuestdbSettings,
                                                   sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """500s, a slow server (client timeout) and a stopped server are retried; every row arrives."""
    source = SignalsSource(settings)
    retries = sample(metrics.RETRIES, component="questdb")
    insert(questdb, NOW - timedelta(minutes=9))
    async with running(source, sink):
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        questdb.fail_next = 3
        insert(questdb, NOW - timedelta(minutes=8))
        await eventually(lambda: in_sync(questdb, pool), what="after 500s")
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up")
        before_timeouts = sample(metrics.RETRIES, component="questdb")
        questdb.delay = 1.5  # over request_timeout
        insert(questdb, NOW - timedelta(minutes=7))
        await eventually(lambda: _true(sample(metrics.RETRIES, component="questdb") >= before_timeouts + 2),
                         what="timeouts retried")
        assert sample(metrics.SOURCE_UP, stream=source.stream) == 0
        questdb.delay = 0.0
        await eventually(lambda: in_sync(questdb, pool), what="after timeouts")
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up")
        await questdb.stop()
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 0), what="down")
        for i in range(4):
            insert(questdb, NOW - timedelta(minutes=6, seconds=i))
        await questdb.start()
        await eventually(lambda: in_sync(questdb, pool), timeout=20, what="after restart")
    assert sample(metrics.RETRIES, component="questdb") >= retries + 6


async def test_nan_null_doubles_and_empty_messages(questdb: QuestDBEmulator, settings: QuestdbSettings,
                                                   sink: PostgresSink, pool: asyncpg.Pool) -> None:
    """NaN reads as null over /exec and lands as NULL; NULL doubles and '' messages survive."""
    nan_key = insert(questdb, NOW - timedelta(minutes=3), buy_min="NaN", message="")
    null_key = insert(questdb, NOW - timedelta(minutes=2), buy_min="null", message="it''s")
    async with running(SignalsSource(settings), sink):
        await eventually(lambda: in_sync(questdb, pool), what="rows")
    rows = {r["signal_key"]: r for r in await pool.fetch(f"SELECT * FROM {SIGNALS}")}
    assert rows[nan_key]["buy_min"] is None
    assert rows[nan_key]["raw_message"] == ""
    assert rows[null_key]["buy_min"] is None
    assert rows[null_key]["raw_message"] == "it's"


async def test_versioned_tables_latest_version_tombstone_and_no_token(
    questdb: QuestDBEmulator, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool
) -> None:
    """Latest version per id wins, status='deleted' is kept as a tombstone, the token never leaves QuestDB."""
    def bot(id_: str, status: str, minutes: int) -> None:
        at = format_timestamp(NOW - timedelta(minutes=minutes))
        questdb.run_sql(f"INSERT INTO telegram_bots VALUES ('{id_}', 'user_{id_}', 'SECRET-{id_}', 'sender', "
                        f"'d', '{status}', '{at}', '{at}')")
    bot("bot-1", "active", 10)
    bot("bot-1", "inactive", 5)
    bot("bot-2", "active", 9)
    source = VersionedSource(settings, "telegram_bots")
    async with running(source, sink):
        await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM signals.telegram_bots"), what="bots")
        bot("bot-2", "deleted", 1)
        await eventually(lambda: pool.fetchval(
            "SELECT status = 'deleted' FROM signals.telegram_bots WHERE id = 'bot-2'"), what="tombstone")
    assert await pool.fetchval("SELECT status FROM signals.telegram_bots WHERE id = 'bot-1'") == "inactive"
    dump = str([tuple(r) for r in await pool.fetch("SELECT * FROM signals.telegram_bots")])
    assert "SECRET" not in dump


async def test_pg_wire_reader_against_a_postgresql_stand_in(settings: QuestdbSettings, sink: PostgresSink,
                                                           pool: asyncpg.Pool, dsn: str) -> None:
    """The PG-wire transport on a `timestamp without time zone` table holding UTC (QuestDB's PG wire)."""
    await pool.execute(
        "CREATE TABLE public.tp_capital_signals (ts timestamp without time zone, channel varchar, "
        "signal_type varchar, asset varchar, buy_min double precision, buy_max double precision, "
        "target_1 double precision, target_2 double precision, target_final double precision, "
        "stop double precision, raw_message varchar, source varchar, ingested_at timestamp without time zone)")
    base = (NOW - timedelta(hours=1)).replace(tzinfo=None)
    rows = [(base + timedelta(seconds=i // 4), "c", "Swing Trade", "VALEW591", float("nan") if i == 3 else 1.0,
             None, 1.0, 2.0, 3.0, 0.5, "", "forwarder", base + timedelta(seconds=i // 4, microseconds=i))
            for i in range(17)]
    await pool.copy_records_to_table("tp_capital_signals", schema_name="public", records=rows)
    await pool.execute("CREATE TABLE public.tp_capital_signals_deleted AS "
                       "SELECT *, ts AS deleted_at FROM public.tp_capital_signals WITH NO DATA")
    pg_settings = settings.model_copy(update={"transport": "pg"})
    source = SignalsSource(pg_settings, PgWireReader(pg_settings, dsn=dsn))
    async with running(source, sink):
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 17 FROM {SIGNALS}"), what="17 rows")
    first = await pool.fetchrow(f"SELECT ts, buy_min FROM {SIGNALS} ORDER BY ts, signal_key LIMIT 1")
    assert first["ts"] == base.replace(tzinfo=UTC)
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS} WHERE buy_min IS NULL") == 1


@pytest.mark.e2e
async def test_backfill_kill9_and_resume_equals_source(dsn: str, pool: asyncpg.Pool) -> None:
    """`syncd backfill` killed with SIGKILL mid-run, then run again: PG equals the source, no duplicates."""
    rows = 30_000
    emulator = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.questdb", "--generated", str(rows), "--rate", "0.5"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3])
    try:
        assert emulator.stdout is not None
        port = int(emulator.stdout.readline().split()[1])
        env = {**os.environ, "SYNCD_PG_DSN": dsn, "QUESTDB_HTTP_PORT": str(port)}
        cmd = [str(Path(sys.executable).parent / "syncd"), "backfill", "questdb", "--table",
               "tp_capital_signals", "--page-size", "500", "--no-progress"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await eventually(lambda: pool.fetchval(f"SELECT count(*) > 3000 FROM {SIGNALS}"), timeout=60,
                         what="backfill under way")
        first.send_signal(signal.SIGKILL)
        first.wait()
        partial = await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}")
        assert partial < rows
        second = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=True)
        summary = second.stdout.decode().strip().splitlines()[-1]
        assert '"resumed":true' in summary
    finally:
        emulator.terminate()
        emulator.wait()
        if emulator.stdout is not None:
            emulator.stdout.close()
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == rows
    assert await pool.fetchval(f"SELECT count(DISTINCT (ts, signal_key)) FROM {SIGNALS}") == rows
    checkpoint = await pool.fetchval(
        "SELECT position FROM syncd.checkpoints WHERE stream = 'backfill:questdb:tp_capital_signals'")
    assert checkpoint["done"] is True


async def test_verify_signals_per_day_names_the_day_that_differs(questdb: QuestDBEmulator, settings: QuestdbSettings,
                                                                sink: PostgresSink, pool: asyncpg.Pool,
                                                                dsn: str) -> None:
    """`syncd verify tp_capital_signals`: per day, counts and hashes; a changed PG row marks only its day."""
    from syncd.cutover.verify import verify_signals

    yesterday = NOW - timedelta(days=1)
    for i in range(3):
        insert(questdb, yesterday.replace(hour=10, minute=i))
        insert(questdb, NOW - timedelta(seconds=30 + i))
    async with running(SignalsSource(settings, pg_dsn=dsn), sink):
        await eventually(lambda: in_sync(questdb, pool), what="rows copied")
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert [(d.source_rows, d.pg_rows, d.clean) for d in days] == [(3, 3, True), (3, 3, True)]

    await pool.execute(f"UPDATE {SIGNALS} SET asset = 'TAMPERED' WHERE ts = $1", yesterday.replace(hour=10, minute=1))
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert [(d.day, d.clean) for d in days] == [(yesterday.date().isoformat(), False), (NOW.date().isoformat(), True)]
