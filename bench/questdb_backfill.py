"""QuestDB scenarios: `syncd backfill` of N generated rows through the emulator and the sink, beside
raw COPY of the same rows in the same run; the backfill's peak RSS at N and 5N rows; and a steady
live stream of 10,000 rows/s with per-row event lag (commit time minus row ts) percentiles.

Interface for bench/__main__.py: `measures = await questdb_backfill.run(server_dsn, rows)`, a list of
`Measure` like `bench.sink.run`. Scenario names start with "questdb:".
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

from bench.harness import Measure, Stopwatch, fresh_database, make_pool
from syncd.config import QuestdbSettings
from syncd.model import Batch, Checkpoint, TableChanges
from syncd.questdb.source import SignalsSource
from syncd.questdb.sql import SIGNALS_KEY, SIGNALS_PG_COLUMNS, SIGNALS_PG_TABLE, signal_row
from syncd.sink.postgres import PostgresSink

ROOT = Path(__file__).resolve().parents[1]
RSS_FACTOR = 5  # the issue asks for flat memory at 1M and at 5M rows
PAGE = 20_000
STREAM_RATE = 10_000
STREAM_SECONDS = 15.0


@contextmanager
def emulator(*args: str) -> Iterator[int]:
    """The QuestDB emulator in its own process (its memory is not the backfill's); yields its port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.questdb", *args], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline().split()[1])
    finally:
        proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _backfill_process(dsn: str, port: int) -> tuple[dict[str, Any], float, float]:
    """Run `syncd backfill` to completion: (summary, wall seconds, peak RSS MB sampled every 20 ms).

    Sampled rather than wait4's ru_maxrss: Linux carries the forking parent's RSS into the child's
    maxrss across exec (vfork shares the parent's mm), so a large bench process would be reported.
    """
    env = {**os.environ, "SYNCD_PG_DSN": dsn, "QUESTDB_HTTP_PORT": str(port)}
    cmd = [str(Path(sys.executable).parent / "syncd"), "--log-level", "warning", "backfill", "questdb",
           "--table", "tp_capital_signals", "--page-size", str(PAGE), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    peak = _PeakRss(proc.pid)
    peak.start()
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.wait() != 0:
        raise RuntimeError(f"syncd backfill exited {proc.returncode}")
    peak.join()
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    return summary, time.perf_counter() - started, peak.mib


class _PeakRss(threading.Thread):
    """Samples a process's RSS until it exits; `mib` is the highest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.mib = 0.0

    def run(self) -> None:
        try:
            while self.process.status() != psutil.STATUS_ZOMBIE:
                self.mib = max(self.mib, self.process.memory_info().rss / 2**20)
                time.sleep(0.02)
        except psutil.NoSuchProcess:
            pass


async def _backfill(server_dsn: str, rows: int) -> tuple[dict[str, Any], float, float]:
    async with fresh_database(server_dsn) as dsn:
        with emulator("--generated", str(rows), "--rate", "3") as port:
            return await asyncio.to_thread(_backfill_process, dsn, port)


def generated_rows(n: int) -> Iterator[tuple[Any, ...]]:
    """The emulator's generated rows as PG rows (same values, computed here), for raw COPY."""
    from tests.fakes.questdb_sql import EPOCH, GeneratedSignals

    start = int((datetime.now(UTC) - timedelta(days=30) - EPOCH).total_seconds()) * 1_000_000
    table = GeneratedSignals("t", 0, [], start, 3.0, n, 1_000_000, lambda: 2**62)
    for i in range(n):
        raw = table.row(i)
        raw[0] = EPOCH + timedelta(microseconds=raw[0])
        raw[-1] = EPOCH + timedelta(microseconds=raw[-1])
        yield signal_row(raw)


async def _raw_copy(server_dsn: str, n: int) -> float:
    """COPY of the same number of signal rows straight into the table, PAGE rows per transaction."""
    watch = Stopwatch()
    async with fresh_database(server_dsn) as dsn:
        pool = await make_pool(dsn)
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT signals.ensure_partitions('signals.tp_capital_signals', "
                                   "now() - interval '40 days', now())")
                chunk: list[tuple[Any, ...]] = []
                for row in generated_rows(n):
                    chunk.append(row)
                    if len(chunk) == PAGE:
                        await _copy(conn, chunk, watch)
                        chunk = []
                if chunk:
                    await _copy(conn, chunk, watch)
        finally:
            await pool.close()
    return watch.seconds


async def _sink_only(server_dsn: str, n: int) -> float:
    """The same rows through PostgresSink, one checkpointed batch per page (apply time only)."""
    watch = Stopwatch()
    async with fresh_database(server_dsn) as dsn:
        pool = await make_pool(dsn)
        try:
            sink = PostgresSink(pool, await pool.fetchval("SELECT epoch FROM syncd.leader WHERE id = 1"))
            chunk: list[tuple[Any, ...]] = []
            for i, row in enumerate(generated_rows(n), 1):
                chunk.append(row)
                if len(chunk) == PAGE or i == n:
                    batch = Batch(Checkpoint("questdb", "bench", {"page": i}),
                                  [TableChanges(SIGNALS_PG_TABLE, SIGNALS_PG_COLUMNS, SIGNALS_KEY, chunk)])
                    with watch.running():
                        await sink.apply(batch)
                    chunk = []
        finally:
            await pool.close()
    return watch.seconds


async def _copy(conn: asyncpg.Connection, rows: list[tuple[Any, ...]], watch: Stopwatch) -> None:
    with watch.running():
        async with conn.transaction():
            await conn.copy_records_to_table("tp_capital_signals", schema_name="signals",
                                             columns=list(SIGNALS_PG_COLUMNS), records=rows)


async def _stream(server_dsn: str) -> tuple[int, float, list[float]]:
    """10,000 rows/s appear in the emulator in real time; the poller applies them; per-row lag."""
    total = int(STREAM_RATE * (STREAM_SECONDS + 5))
    async with fresh_database(server_dsn) as dsn:
        pool = await make_pool(dsn)
        with emulator("--generated", str(total), "--rate", str(STREAM_RATE), "--tick-us", "1", "--live") as port:
            settings = QuestdbSettings(http_port=port, poll_interval=0.1, safety_lag=0.1, page_size=PAGE,
                                       rescan_interval=60, lag_window=60)
            epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
            try:
                return await _drive(SignalsSource(settings), PostgresSink(pool, epoch))
            finally:
                await pool.close()


async def _drive(source: SignalsSource, sink: PostgresSink) -> tuple[int, float, list[float]]:
    await source.open(None)
    lags: list[float] = []
    started = time.perf_counter()
    try:
        async for batch in source.batches():
            await sink.apply(batch)
            now = time.time()
            for changes in batch.tables:
                lags += [now - row[0].timestamp() for row in changes.upserts]
            source.committed(batch)
            if time.perf_counter() - started >= STREAM_SECONDS:
                break
    finally:
        await source.close()
    return len(lags), time.perf_counter() - started, lags


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(server_dsn: str, rows: int) -> list[Measure]:
    """Every QuestDB scenario; rows ≥ 1,000,000 is the target size."""
    out: list[Measure] = []
    copy_seconds = await _raw_copy(server_dsn, rows)
    out.append(Measure("questdb: backfill", "raw COPY", rows, copy_seconds, "same rows, same page size"))
    sink_seconds = await _sink_only(server_dsn, rows)
    out.append(Measure("questdb: backfill", "sink", rows, sink_seconds,
                       f"PostgresSink.apply, {PAGE:,}-row checkpointed batches: "
                       f"{copy_seconds / sink_seconds:.2f}x raw COPY"))
    summary, wall, rss = await _backfill(server_dsn, rows)
    out.append(Measure("questdb: backfill end-to-end", "syncd backfill via /exec", summary["rows"],
                       summary["seconds"], f"peak RSS {rss:.0f} MB; process wall {wall:.1f} s; "
                       f"{copy_seconds / summary['seconds'] * summary['rows'] / rows:.2f}x raw COPY"))
    summary2, _, rss2 = await _backfill(server_dsn, rows * RSS_FACTOR)
    out.append(Measure("questdb: backfill end-to-end", f"syncd backfill via /exec ({RSS_FACTOR}x)", summary2["rows"],
                       summary2["seconds"], f"peak RSS {rss2:.0f} MB vs {rss:.0f} MB at {rows:,}"))
    n, seconds, lags = await _stream(server_dsn)
    out.append(Measure("questdb: steady stream", f"{STREAM_RATE:,} rows/s live", n, seconds,
                       f"event lag p50 {_pct(lags, 0.5):.3f} s, p99 {_pct(lags, 0.99):.3f} s, "
                       f"max {max(lags, default=float('nan')):.3f} s"))
    return out

