"""QuestDB rows PostgreSQL refuses: never skipped, never blocking the stream.

Real QuestDB, real PostgreSQL, the real syncd CLI. A page refused for a cause bigger than its rows
(a trigger raising a plain exception) rewinds to the committed cursor and is read again once the
cause goes; rows refused on their own (a NUL, an index entry too large, a check violation) are
quarantined one by one and the rest flows; a lost PostgreSQL is retried, never quarantined.
"""

from __future__ import annotations

import asyncio
import random
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from syncd import metrics
from syncd import quarantine as q
from syncd.config import QuestdbSettings
from syncd.cutover.verify import verify_signals
from syncd.database import init_connection
from syncd.questdb.reader import parse_timestamp
from syncd.questdb.reconcile import DayParity, Reconciler
from syncd.questdb.source import SignalsSource, VersionedSource
from syncd.sink.postgres import PostgresSink
from syncd.stream import StreamRunner
from tests.integration.cli.conftest import syncd, write_config
from tests.integration.conftest import eventually, running
from tests.integration.questdb.test_source import NOW, SIGNALS, in_sync, sample
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import Signal, Upstream
from tests.tcp_proxy import TcpProxy


async def _true(value: bool) -> bool:
    return value


async def test_a_refused_page_is_read_again_after_the_cause_goes(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("syncd.stream.REJECTED_RETRY_SECONDS", 0.1)
    await pool.execute(
        f"""CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.asset = 'BAD' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER refuse_bad BEFORE INSERT OR UPDATE ON {SIGNALS}
               FOR EACH ROW EXECUTE FUNCTION public.refuse_bad()"""
    )
    source = SignalsSource(settings)
    stream = source.stream
    rejected = sample(metrics.BATCHES, stream=stream, outcome="rejected")
    await questdb.insert(Signal(NOW - timedelta(minutes=9)))
    async with running(source, sink):
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        # A page with the refused row among good ones (page_size 5), and pages after it.
        for i in range(12):
            await questdb.insert(Signal(NOW - timedelta(minutes=8, seconds=-i), asset="BAD" if i == 3 else f"OK{i}"))
        await eventually(lambda: _true(sample(metrics.BATCHES, stream=stream, outcome="rejected") >= rejected + 3),
                         timeout=20, what="the page refused three times")
        await pool.execute(f"DROP TRIGGER refuse_bad ON {SIGNALS}")
        await eventually(lambda: in_sync(questdb, pool), timeout=20, what="every row, the refused page included")
    assert await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == 13


def _random_text(n: int) -> str:
    """Text that does not compress: too large for a btree index entry even after TOAST compression."""
    rng = random.Random(n)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


BAD_ROWS: dict[int, tuple[dict[str, str], set[str]]] = {
    # PostgreSQL text cannot hold a NUL: 22021 through COPY, 22P05 through the small-batch JSON path.
    3: ({"raw_message": "nul \x00 inside"}, {"22021", "22P05"}),
    7: ({"channel": _random_text(9000)}, {"54000"}),  # (channel, ts) index entry over btree's limit
    9: ({"asset": "REFUSED"}, {"23514"}),  # a rule only PostgreSQL knows: a check violation
}


REFUSE_ASSET = f"""
    CREATE FUNCTION public.refuse_asset() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.asset = 'REFUSED' THEN
        RAISE EXCEPTION 'asset REFUSED is not traded' USING ERRCODE = 'check_violation'; END IF;
      RETURN NEW; END $$;
    CREATE TRIGGER refuse_asset BEFORE INSERT OR UPDATE ON {SIGNALS}
       FOR EACH ROW EXECUTE FUNCTION public.refuse_asset()"""
"""A rule only PostgreSQL knows: a signal of asset REFUSED is a check violation (23514)."""


async def _held(pool: asyncpg.Pool, n: int, status: str = "held") -> list[asyncpg.Record] | None:
    rows = await pool.fetch(
        "SELECT * FROM syncd.quarantine WHERE stream = 'questdb:tp_capital_signals' AND status = $1 ORDER BY id",
        status,
    )
    return rows if len(rows) == n else None


async def _compare_up_to_cursor(source: SignalsSource, runner: StreamRunner, dsn: str) -> DayParity:
    """The reconcile's comparison of the test's rows (from 10 minutes before NOW) up to the cursor."""
    top = parse_timestamp(runner.state.checkpoint["cursor"]["ts"])
    reconciler = Reconciler(source, dsn)
    try:
        return await reconciler.compare(NOW - timedelta(minutes=10), top)
    finally:
        await reconciler.close()


async def _count(pool: asyncpg.Pool, n: int) -> bool:
    return bool(await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}") == n)


async def test_rows_postgresql_refuses_are_quarantined_and_the_stream_flows(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool, dsn: str, tmp_path: Path
) -> None:
    """A NUL in raw_message, a channel too large for its index entry and a row a trigger refuses as a
    check violation: each is quarantined on its own, with its reason and QuestDB position; every
    other row of their pages and after them arrives, the watermark passes them, and neither the
    lag-window rescan nor the reconcile's comparison takes them for missing rows. Then `syncd
    quarantine replay` brings one in once its cause is gone, `discard` drops another, `show` shows."""
    await pool.execute(REFUSE_ASSET)
    source = SignalsSource(settings, pg_dsn=dsn)
    stream = source.stream
    await questdb.insert(Signal(NOW - timedelta(minutes=9)))
    async with running(source, sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        stamps = [NOW - timedelta(minutes=8, seconds=-i) for i in range(12)]
        for i, ts in enumerate(stamps):  # pages of 5: each bad row among good ones
            await questdb.insert(Signal(ts, **{"asset": f"OK{i}", **BAD_ROWS.get(i, ({}, ""))[0]}))
        held = await eventually(lambda: _held(pool, 3), what="the three refused rows quarantined")
        await eventually(lambda: _count(pool, 1 + 12 - 3), what="every other row")
        # Each with its QuestDB position: table, timestamp, key, row hash.
        found = {stamps.index(parse_timestamp(r["position"]["ts"])): r for r in held}
        assert set(found) == set(BAD_ROWS)
        for i, (_, codes) in BAD_ROWS.items():
            entry = found[i]
            assert entry["reason"][1:6] in codes, entry["reason"]
            assert (entry["table_name"], entry["source"]) == (SIGNALS, "questdb")
            assert entry["position"]["questdb_table"] == "tp_capital_signals"
            assert entry["position"]["key"] == {"signal_key": entry["key"]}
            assert len(entry["position"]["row_hash"]) == 32
        assert found[9]["raw"]["asset"] == "REFUSED"
        assert found[9]["raw"]["signal_key"] == found[9]["key"]
        assert "\\u0000" in found[3]["raw"]["text"]  # jsonb cannot hold the NUL either
        assert "NUL" in found[3]["raw"]["error"]
        # The watermark is past the refused rows, and the stream keeps flowing.
        assert parse_timestamp(runner.state.checkpoint["cursor"]["ts"]) == stamps[-1]
        await questdb.insert(Signal(NOW - timedelta(minutes=7), asset="AFTER"))
        await eventually(lambda: _count(pool, 11), what="a row after the refused ones")
        assert source.quarantined == 3
        assert sample(metrics.QUARANTINE_RECORDS, stream=stream) == 3

        # The rescan re-reads the window (every 0.2 s) and the reconcile's comparison counts the
        # source: neither quarantines the held rows again nor takes them for rows PostgreSQL lacks.
        rescanned = source._last_rescan
        await eventually(lambda: _true(source._last_rescan != rescanned), what="a rescan over the held rows")
        parity = await _compare_up_to_cursor(source, runner, dsn)
        assert (parity.source_rows, parity.pg_rows, parity.clean) == (11, 11, True)
        assert await _held(pool, 3), "held rows quarantined again"

        # The operator's tools: show, then replay once the cause is gone, discard another.
        config = write_config(tmp_path / "syncd.toml", dsn)
        refused, nul = found[9]["id"], found[3]["id"]
        shown = syncd("quarantine", "show", str(refused), "--json", "--config", config)
        assert shown.rc == 0, shown.stderr
        assert orjson.loads(shown.stdout)["position"] == found[9]["position"]
        text = syncd("quarantine", "show", str(nul), "--config", config)
        assert text.rc == 0, text.stderr
        assert "tp_capital_signals" in text.stdout, text.stdout
        assert found[3]["reason"].splitlines()[0] in text.stdout, text.stdout
        listed = syncd("quarantine", "list", "--json", "--stream", stream, "--config", config)
        assert {orjson.loads(line)["id"] for line in listed.stdout.splitlines()} == {r["id"] for r in held}
        await pool.execute(f"DROP TRIGGER refuse_asset ON {SIGNALS}")
        assert syncd("quarantine", "replay", str(refused), "--config", config).rc == 0
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 1 FROM {SIGNALS} WHERE asset = 'REFUSED'"),
                         what="the replayed row")
        assert syncd("quarantine", "discard", str(nul), "--config", config).rc == 0
        await eventually(lambda: _true(source.quarantined == 1), what="held count after replay and discard")
        # Replayed once: the position names it, a later poll does not read it again.
        assert runner.state.checkpoint["replayed_through"]
    assert (await _held(pool, 1))[0]["reason"].startswith("[54000]")  # type: ignore[index]
    assert await _held(pool, 1, "replayed")
    assert await _held(pool, 1, "discarded")


def _verify(settings: QuestdbSettings, dsn: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`syncd verify tp_capital_signals --days 2 ARGS` against this QuestDB: exit code and stdout
    (200 columns, so a key never folds)."""
    config = write_config(tmp_path / "syncd.toml", dsn, f"""
[questdb]
host = "127.0.0.1"
http_port = {settings.http_port}
pg_port = {settings.pg_port}
transport = "{settings.transport}"
safety_lag = {settings.safety_lag}
""")
    ran = syncd("verify", "tp_capital_signals", "--days", "2", *args, "--config", config, env={"COLUMNS": "200"})
    assert ran.rc in (0, 1), ran.stderr
    return ran.rc, ran.stdout


def _days_held(days: list[DayParity]) -> list[tuple[tuple[str, ...], tuple[str, ...], int, int, bool]]:
    """(held, stale, rows compared on each side, clean) of the days that hold a held row."""
    return [(d.held, d.stale, d.source_rows, d.pg_rows, d.clean) for d in days if d.held]


async def test_verify_names_a_held_row_rather_than_counting_its_day_as_mismatching(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool, dsn: str, tmp_path: Path
) -> None:
    """`syncd verify tp_capital_signals`: a row PostgreSQL refused is listed as held (`!KEY`, its
    day otherwise equal), not as an unexplained difference; exit 1, a held row being a problem to fix."""
    await pool.execute(REFUSE_ASSET)
    for i in range(3):
        await questdb.insert(Signal(NOW - timedelta(minutes=5, seconds=-i), asset="REFUSED" if i == 1 else f"OK{i}"))
    async with running(SignalsSource(settings, pg_dsn=dsn), sink):
        (entry,) = await eventually(lambda: _held(pool, 1), what="the refused row quarantined")
        await eventually(lambda: _count(pool, 2), what="the other rows")
    key = entry["key"]
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert _days_held(days) == [((key,), (), 2, 2, True)]
    assert all(d.clean for d in days)

    rc, stdout = _verify(settings, dsn, tmp_path, "--json")
    assert rc == 1, stdout
    assert [line["held"] for line in map(orjson.loads, stdout.splitlines()) if line["held"]] == [[key]]
    rc, stdout = _verify(settings, dsn, tmp_path)
    assert rc == 1
    assert f"!{key}" in stdout, stdout
    assert "DIFFERENT" not in stdout, stdout


async def test_an_update_into_a_refused_version_is_held_and_postgresql_keeps_the_last_good_one(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool, dsn: str, tmp_path: Path
) -> None:
    """QuestDB changes a row PostgreSQL holds (an UPDATE, which upstream never does) into a version
    PostgreSQL refuses: the new version is quarantined with its position, PostgreSQL keeps the last
    good one, and the reconcile and verify name the row as held with a stale PostgreSQL version
    instead of counting its day as mismatching; once the cause is fixed, a replay applies QuestDB's."""
    await pool.execute(REFUSE_ASSET)
    for i in range(3):
        await questdb.insert(Signal(NOW - timedelta(minutes=5, seconds=-i), asset=f"OK{i}"))
    async with running(SignalsSource(settings, pg_dsn=dsn), sink):
        await eventually(lambda: in_sync(questdb, pool), what="every row")
    key = (await questdb.keys())[1]
    await questdb.update(key, "asset", "REFUSED")
    # A stream starting re-reads the whole lag window (the nightly reconcile finds it otherwise).
    source = SignalsSource(settings, pg_dsn=dsn)
    async with running(source, sink) as runner:
        (entry,) = await eventually(lambda: _held(pool, 1), what="the changed row quarantined")
        assert entry["key"] == key
        assert entry["raw"]["asset"] == "REFUSED"
        assert entry["position"]["key"] == {"signal_key": key}
        assert entry["reason"].startswith("[23514]")
        old = await pool.fetchrow(f"SELECT asset, row_hash FROM {SIGNALS} WHERE signal_key = $1", key)
        assert old["asset"] == "OK1"
        assert entry["position"]["row_hash"] != bytes(old["row_hash"]).hex()
        parity = await _compare_up_to_cursor(source, runner, dsn)
        assert (parity.held, parity.stale, parity.source_rows, parity.pg_rows, parity.clean) == (
            (key,), (key,), 2, 2, True)
    assert _days_held(await verify_signals(settings, dsn, 2, datetime.now(UTC))) == [((key,), (key,), 2, 2, True)]
    # A reconcile from the committed position repairs nothing and names the stale row in its result.
    source = SignalsSource(settings, pg_dsn=dsn)
    await source.open(await pool.fetchval("SELECT position FROM syncd.checkpoints WHERE stream = $1", source.stream))
    await source.replays()
    source.position["reconcile_pending"] = "delete"  # as a new `_deleted` row schedules it: today included
    reconciler = Reconciler(source, dsn)
    try:
        batches = [batch async for batch in reconciler.run(datetime.now(UTC))]
    finally:
        await reconciler.close()
        await source.close()
    assert [batch.size for batch in batches] == [0]
    result = source.position["reconcile"]
    assert (result["mismatched_days"], result["held_rows"], result["stale_keys"]) == ([], 1, [key])
    rc, stdout = _verify(settings, dsn, tmp_path)
    assert rc == 1
    assert f"!{key} (pg: older version)" in stdout, stdout

    # Recovered the way every held row is: the cause fixed, the row replayed, QuestDB's version applied.
    await pool.execute(f"DROP TRIGGER refuse_asset ON {SIGNALS}")
    async with running(SignalsSource(settings, pg_dsn=dsn), sink):
        async with pool.acquire() as conn:
            assert await q.resolve(conn, [entry["id"]], "replayed") == [entry["id"]]
        await eventually(lambda: pool.fetchval(f"SELECT asset = 'REFUSED' FROM {SIGNALS} WHERE signal_key = $1", key),
                         what="QuestDB's version applied")
    days = await verify_signals(settings, dsn, 2, datetime.now(UTC))
    assert all(d.clean and not d.held for d in days), days


async def _naming_stale_rows(runner: StreamRunner) -> dict[str, Any] | None:
    """The last reconcile's result once it names stale rows."""
    result: dict[str, Any] = runner.state.checkpoint.get("reconcile") or {}
    return result if result.get("stale_keys") else None


async def test_the_reconcile_finds_an_update_into_a_refused_version_and_names_the_stale_row(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool, dsn: str
) -> None:
    """The way a running daemon meets such an UPDATE: the reconcile that upstream's next delete
    (a rebuild) schedules re-copies the day, PostgreSQL refuses the changed row, it is quarantined
    while the rest of the repair commits, and the result lists it in `stale_keys`."""
    await pool.execute(REFUSE_ASSET)
    for i in range(3):
        await questdb.insert(Signal(NOW - timedelta(minutes=5, seconds=-i), asset=f"OK{i}"))
    async with running(SignalsSource(settings, pg_dsn=dsn), sink) as runner:
        await eventually(lambda: in_sync(questdb, pool), what="every row")
        await eventually(lambda: _true("reconcile" in runner.state.checkpoint), what="the reconcile's baseline")
        changed, deleted = (await questdb.keys())[1:]
        await questdb.update(changed, "asset", "REFUSED")
        await questdb.delete(deleted)
        (entry,) = await eventually(lambda: _held(pool, 1), what="the changed row quarantined")
        result = await eventually(lambda: _naming_stale_rows(runner), what="the reconcile's result")
    assert entry["key"] == changed
    assert (result["held_rows"], result["stale_keys"]) == (1, [changed])
    assert await pool.fetchval(f"SELECT asset FROM {SIGNALS} WHERE signal_key = $1", changed) == "OK1"
    assert await pool.fetchval(f"SELECT deleted_at IS NOT NULL FROM {SIGNALS} WHERE signal_key = $1", deleted)


async def test_a_versioned_row_refused_is_quarantined_and_replayed_after_the_fix(
    questdb: Upstream, settings: QuestdbSettings, sink: PostgresSink, pool: asyncpg.Pool, dsn: str
) -> None:
    """A bot status PostgreSQL's CHECK does not know is quarantined under the bot's id while the
    other bots flow; once the constraint accepts it, a replay brings the bot in."""
    await questdb.append_bot("bot-1", "active", NOW - timedelta(minutes=10))
    await questdb.append_bot("bot-2", "archived", NOW - timedelta(minutes=9))
    await questdb.append_bot("bot-3", "active", NOW - timedelta(minutes=8))
    source = VersionedSource(settings, "telegram_bots", pg_dsn=dsn)
    async with running(source, sink):
        held = await eventually(lambda: pool.fetch("SELECT * FROM syncd.quarantine WHERE status = 'held'"),
                                what="bot-2 quarantined")
        await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM signals.telegram_bots"), what="the others")
        (entry,) = held
        assert (entry["stream"], entry["table_name"], entry["key"]) == ("questdb:telegram_bots",
                                                                         "signals.telegram_bots", "bot-2")
        assert entry["reason"].startswith("[23514]")
        assert entry["raw"]["status"] == "archived"
        assert entry["position"]["questdb_table"] == "telegram_bots"
        await questdb.append_bot("bot-1", "inactive", NOW - timedelta(minutes=1))  # re-reads keep it out
        await eventually(lambda: pool.fetchval(
            "SELECT status = 'inactive' FROM signals.telegram_bots WHERE id = 'bot-1'"), what="bot-1's new version")
        assert await pool.fetchval("SELECT count(*) FROM syncd.quarantine") == 1
        await pool.execute("""ALTER TABLE signals.telegram_bots DROP CONSTRAINT telegram_bots_status_check,
                              ADD CHECK (status IN ('active', 'inactive', 'archived', 'deleted'))""")
        async with pool.acquire() as conn:
            assert await q.resolve(conn, [entry["id"]], "replayed") == [entry["id"]]
        await eventually(lambda: pool.fetchval(
            "SELECT status = 'archived' FROM signals.telegram_bots WHERE id = 'bot-2'"), what="bot-2 replayed")
        await eventually(lambda: _true(source.quarantined == 0), what="nothing held")


async def test_postgresql_lost_mid_batch_is_retried_never_quarantined(
    questdb: Upstream, questdb_server: QuestdbServer, pool: asyncpg.Pool, dsn: str
) -> None:
    """PostgreSQL's connections cut while rows wait (a refused one among them): the batch is retried
    until PostgreSQL is back, then only the refused row is quarantined and every other row arrives."""
    proxy = await TcpProxy(urlsplit(dsn).port or 5432).start()
    parts = urlsplit(dsn)
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    through = await asyncpg.create_pool(proxied, min_size=1, max_size=4, init=init_connection)
    assert through is not None
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    settings = QuestdbSettings(http_port=questdb_server.http_port, poll_interval=0.05, safety_lag=0.5,
                               rescan_interval=0.2, page_size=5)
    source = SignalsSource(settings, pg_dsn=proxied)
    stream = source.stream
    retried = sample(metrics.BATCHES, stream=stream, outcome="retried")
    try:
        await questdb.insert(Signal(NOW - timedelta(minutes=9)))
        async with running(source, PostgresSink(through, epoch)):
            await eventually(lambda: in_sync(questdb, pool), what="first row")
            await proxy.cut()
            for i in range(6):
                await questdb.insert(Signal(NOW - timedelta(minutes=8, seconds=-i), asset=f"CUT{i}",
                                            raw_message="nul \x00" if i == 2 else "ok"))
            await eventually(lambda: _true(sample(metrics.BATCHES, stream=stream, outcome="retried") >= retried + 2),
                             what="the batch retried while PostgreSQL is away")
            proxy.restore()
            await eventually(lambda: _count(pool, 6), what="every good row once PostgreSQL is back")
            held = await eventually(lambda: _held(pool, 1), what="the refused row alone quarantined")
        assert held[0]["reason"][1:6] in BAD_ROWS[3][1], held[0]["reason"]
        assert await pool.fetchval("SELECT count(*) FROM syncd.quarantine") == 1
    finally:
        await through.close()
        await proxy.close()


async def test_backfill_quarantines_refused_rows_and_the_live_stream_keeps_them_out(
    questdb: Upstream, questdb_server: QuestdbServer, sink: PostgresSink, pool: asyncpg.Pool, dsn: str
) -> None:
    """`syncd backfill questdb` (the real CLI) quarantines the rows PostgreSQL refuses on their own
    and loads the rest (exit 0, counted in its summary); the live stream over the same rows neither
    quarantines them again nor loses them: a replay through it brings one in once its cause is gone."""
    await pool.execute(
        f"""CREATE FUNCTION public.refuse_asset() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.asset = 'REFUSED' THEN RAISE EXCEPTION 'no' USING ERRCODE = 'check_violation'; END IF;
            RETURN NEW; END $$;
            CREATE TRIGGER refuse_asset BEFORE INSERT OR UPDATE ON {SIGNALS}
               FOR EACH ROW EXECUTE FUNCTION public.refuse_asset()"""
    )
    bad = {2: {"raw_message": "nul \x00"}, 5: {"asset": "REFUSED"}}
    for i in range(8):
        await questdb.insert(Signal(NOW - timedelta(minutes=20, seconds=-i), **{"asset": f"B{i}", **bad.get(i, {})}))
    await questdb.applied()
    env = {"SYNCD_PG_DSN": dsn, "QUESTDB_HTTP_PORT": str(questdb_server.http_port)}
    args = ("backfill", "questdb", "--table", "tp_capital_signals", "--page-size", "3", "--no-progress")
    done = await asyncio.to_thread(syncd, *args, env=env)
    assert done.rc == 0, done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert summary["quarantined"] == 2, summary
    assert await _count(pool, 6)
    held = await pool.fetch("SELECT * FROM syncd.quarantine ORDER BY id")
    assert {r["stream"] for r in held} == {"backfill:questdb:tp_capital_signals"}
    assert {r["raw"].get("asset") for r in held} == {None, "REFUSED"}  # the NUL one is kept as text

    settings = QuestdbSettings(http_port=questdb_server.http_port, poll_interval=0.05, safety_lag=0.5,
                               lag_window=3600, rescan_interval=0.2, page_size=3)
    source = SignalsSource(settings, pg_dsn=dsn)
    async with running(source, sink):
        await eventually(lambda: _true(source.quarantined == 2), what="the backfill's held rows, seen live")
        rescanned = source._last_rescan
        await eventually(lambda: _true(source._last_rescan != rescanned), what="a rescan over them")
        assert await pool.fetchval("SELECT count(*) FROM syncd.quarantine") == 2
        await pool.execute(f"DROP TRIGGER refuse_asset ON {SIGNALS}")
        refused = next(r["id"] for r in held if r["raw"].get("asset") == "REFUSED")
        async with pool.acquire() as conn:
            await q.resolve(conn, [refused], "replayed")
        await eventually(lambda: _count(pool, 7), what="the replayed row, through the live stream")
        await eventually(lambda: _true(source.quarantined == 1), what="one row still held")
