"""The daemon process against the real QuestDB, on the line upstream runs and on the current release:
a writer inserts signals the way tp-capital does at a steady rate, upstream's delete (copy to
`_deleted`, then CREATE AS / DROP / RENAME) runs in the middle of it, and at the end
`syncd verify tp_capital_signals` exits 0 and PostgreSQL holds every live row once and every
deleted one with `deleted_at`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from syncd.questdb.reader import format_timestamp, parse_timestamp
from tests.e2e.daemon import SYNCD, DaemonProcess, write_config
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import QuestdbError, Signal, Upstream

pytestmark = pytest.mark.e2e
SIGNALS = "signals.tp_capital_signals"
RATE = 40  # rows/s, one INSERT per request as tp-capital sends them
WRITE_SECONDS = 8.0
# The writer goes on past the deletes until this many rows are in, however slow the machine is.
MIN_WRITTEN = int(RATE * WRITE_SECONDS * 0.5)
DELETES = 3


@pytest.fixture(params=["suite", "latest"])
def server(request: pytest.FixtureRequest) -> QuestdbServer:
    """The end-to-end run on both pinned QuestDB versions."""
    found: QuestdbServer = request.getfixturevalue("questdb_server" if request.param == "suite" else "questdb_latest")
    return found


async def write_steadily(upstream: Upstream, stop: asyncio.Event) -> int:
    """One signal every 1/RATE s; an INSERT that meets the table mid-rebuild is retried, as a
    forwarder retries a failed request (QuestDB answers "table does not exist", "table is dropped"
    or "WAL writer is distressed" then). Runs until `stop` and MIN_WRITTEN rows; returns how many."""
    n, tick = 0, time.monotonic()
    while not stop.is_set() or n < MIN_WRITTEN:
        signal = Signal(datetime.now(UTC) - timedelta(milliseconds=500), asset=f"E2E{n}", raw_message=f"msg {n}")
        while True:
            try:
                await upstream.insert(signal)
                break
            except QuestdbError as exc:
                if not any(text in str(exc) for text in ("does not exist", "is dropped", "distressed")):
                    raise
                await asyncio.sleep(0.02)
        n += 1
        tick += 1 / RATE
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return n


async def delete_some(upstream: Upstream) -> list[str]:
    """Upstream's delete of an older signal, DELETES times spread over the writing."""
    deleted: list[str] = []
    for _ in range(DELETES):
        await asyncio.sleep(WRITE_SECONDS / (DELETES + 1))
        await upstream.applied()
        keys = await upstream.keys()
        victim = next(k for k in keys[len(keys) // 3:] if k not in deleted)
        await upstream.delete(victim)
        deleted.append(victim)
    return deleted


async def converged(upstream: Upstream, pool: asyncpg.Pool) -> bool:
    """PG's live rows are exactly QuestDB's rows, and every `_deleted` row carries deleted_at."""
    await upstream.applied()
    live = {(parse_timestamp(ts), key) for ts, key in await upstream.rows(
        "SELECT ts, ingested_at FROM tp_capital_signals")}
    gone = {key for (key,) in await upstream.rows("SELECT ingested_at FROM tp_capital_signals_deleted")}
    rows = await pool.fetch(f"SELECT ts, ingested_at, deleted_at FROM {SIGNALS}")
    pg_live = {(r["ts"], format_timestamp(r["ingested_at"])) for r in rows if r["deleted_at"] is None}
    pg_gone = {format_timestamp(r["ingested_at"]) for r in rows if r["deleted_at"] is not None}
    return pg_live == live and gone <= pg_gone


async def rebuild_reconciled(pool: asyncpg.Pool) -> bool:
    """The stream saw a rebuild (a new table id on 9.x, a restarted WAL sequencer, or a new _deleted
    row) and its reconcile's result is in the committed checkpoint."""
    position = await pool.fetchval("SELECT position FROM syncd.checkpoints WHERE stream = 'questdb:tp_capital_signals'")
    return bool(position and (position.get("reconcile") or {}).get("reason") in ("identity", "delete"))


async def test_daemon_follows_upstream_writes_and_rebuild_deletes(server: QuestdbServer, dsn: str,
                                                                  pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Steady inserts and three rebuild deletes under the running daemon; verify exits 0 after."""
    config = write_config(tmp_path / "syncd.toml", f"""
[questdb]
host = "127.0.0.1"
http_port = {server.http_port}
pg_port = {server.pg_port}
tables = ["tp_capital_signals"]
poll_interval = "100ms"
safety_lag = "1s"
rescan_interval = "2s"
""")
    async with Upstream(server.http_port) as upstream:
        await upstream.reset()
        daemon = DaemonProcess(config, dsn).start()
        try:
            await daemon.leading(timeout=60)
            stop = asyncio.Event()
            writer = asyncio.create_task(write_steadily(upstream, stop))
            deleted = await delete_some(upstream)
            await asyncio.sleep(WRITE_SECONDS / (DELETES + 1))
            stop.set()
            await writer
            await daemon.until(lambda: converged(upstream, pool), 60, "PostgreSQL equal to QuestDB")
            await daemon.until(lambda: rebuild_reconciled(pool), 30, "the reconcile a rebuild schedules")
            verify = subprocess.run([str(SYNCD), "verify", "tp_capital_signals", "--days", "2", "--config",
                                     str(config)], env=daemon.env, capture_output=True, timeout=120)
            assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
        finally:
            assert daemon.stop() == 0, daemon.output()[-4000:]
    total = await pool.fetchval(f"SELECT count(*) FROM {SIGNALS}")
    assert total == await pool.fetchval(f"SELECT count(DISTINCT (ts, signal_key)) FROM {SIGNALS}")
    marked = await pool.fetch(f"SELECT signal_key FROM {SIGNALS} WHERE deleted_at IS NOT NULL")
    assert set(deleted) <= {r["signal_key"] for r in marked}


async def _held(pool: asyncpg.Pool) -> dict[str, str]:
    """stream → reason of every held quarantine row."""
    rows = await pool.fetch("SELECT stream, reason FROM syncd.quarantine WHERE status = 'held'")
    return {r["stream"]: r["reason"] for r in rows}


async def test_daemon_quarantines_rows_postgresql_refuses(server: QuestdbServer, dsn: str, pool: asyncpg.Pool,
                                                          tmp_path: Path) -> None:
    """A signal holding a NUL and a bot with a status PostgreSQL's CHECK refuses: the daemon holds
    each in quarantine, both streams stay caught up and flow, and a restarted daemon neither loses
    nor quarantines them again; `syncd quarantine list` shows them."""
    config = write_config(tmp_path / "syncd.toml", f"""
[questdb]
http_port = {server.http_port}
pg_port = {server.pg_port}
tables = ["tp_capital_signals", "telegram_bots"]
poll_interval = "100ms"
safety_lag = "1s"
rescan_interval = "1s"
""")
    now = datetime.now(UTC)
    async with Upstream(server.http_port) as upstream:
        await upstream.reset()
        for i in range(5):
            await upstream.insert(Signal(now - timedelta(minutes=5, seconds=-i), asset=f"Q{i}",
                                         raw_message="a NUL \x00 here" if i == 2 else "ok"))
        await upstream.append_bot("bot-ok", "active", now - timedelta(minutes=4))
        await upstream.append_bot("bot-odd", "suspended", now - timedelta(minutes=4))
        daemon = DaemonProcess(config, dsn).start()
        try:
            await daemon.leading(timeout=60)
            await daemon.until(lambda: pool.fetchval(f"SELECT count(*) = 4 FROM {SIGNALS}"), 60, "the other signals")
            await daemon.until(lambda: pool.fetchval("SELECT count(*) = 1 FROM signals.telegram_bots"), 30, "bot-ok")
            held = await _held(pool)
            assert set(held) == {"questdb:tp_capital_signals", "questdb:telegram_bots"}, held
            assert held["questdb:telegram_bots"].startswith("[23514]"), held

            async def reported() -> bool:
                _, body = await daemon.get("/status")
                streams = body["streams"]
                return all(streams[s]["quarantined"] == 1 and streams[s]["caught_up"] for s in held)

            await daemon.until(reported, 30, "/status: one held row per stream, caught up")
            await upstream.insert(Signal(now - timedelta(minutes=3), asset="LATER"))
            await daemon.until(lambda: pool.fetchval(f"SELECT count(*) = 5 FROM {SIGNALS}"), 30, "a later signal")
        finally:
            assert daemon.stop() == 0, daemon.output()[-4000:]
        daemon = DaemonProcess(config, dsn).start()
        try:
            await daemon.leading(timeout=60)
            await upstream.insert(Signal(now - timedelta(minutes=2), asset="RESTARTED"))
            await daemon.until(lambda: pool.fetchval(f"SELECT count(*) = 6 FROM {SIGNALS}"), 30, "after a restart")
            await daemon.until(reported, 30, "/status after the restart")
            listed = subprocess.run([str(SYNCD), "quarantine", "list", "--json", "--config", str(config)],
                                    env=daemon.env, capture_output=True, timeout=60)
            assert listed.returncode == 0, listed.stderr.decode()
            assert len(listed.stdout.splitlines()) == 2, listed.stdout.decode()
        finally:
            assert daemon.stop() == 0, daemon.output()[-4000:]
    assert await pool.fetchval("SELECT count(*) FROM syncd.quarantine") == 2
