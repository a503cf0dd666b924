"""QuestDB scenarios against the real QuestDB (QUESTDB_SUITE, the jar `make tools` fetched):

- backfill: N signals generated inside QuestDB; raw COPY of the same rows (read from QuestDB
  beforehand, not timed) into the same table in the same page size, against `syncd backfill` end to
  end as a process, over `/exec` and over PG wire; interleaved rounds after a warm-up; the
  backfill's peak RSS at N and at 5N rows. N = 200k, 5N = 1M: the issue's 1M and 5M would take
  the QuestDB scenarios alone past a third of the bench's 20 minutes (about 10k rows/s end to end).
- WAL apply delay: upstream's one-row INSERTs, the time from the row's `ingested_at` (server now())
  until a SELECT sees it: what `safety_lag` must cover.
- poller catch-up: the poller and the sink in this process, from an empty checkpoint over a backlog
  of N/2 signals: the rate the live stream applies when it is behind (its ceiling).
- steady stream: a writer commits 10,000 rows/s (1,000-row INSERT … SELECT every 100 ms); the
  poller and the sink run in this process; per-row event lag = commit time minus the row's ts.
WAL delay, catch-up and stream are repeated like the rest (a warm-up round, then three); only the
5N memory run is a single one.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.harness import Bench, Line, PeakRss, Sample, fresh_database, make_pool
from syncd.config import QuestdbSettings
from syncd.questdb.reader import HttpReader, parse_timestamp
from syncd.questdb.source import SignalsSource
from syncd.questdb.sql import SIGNAL_COLUMNS, SIGNALS_PG_COLUMNS, signal_row
from syncd.sink.postgres import PostgresSink
from tests.questdb_server import QUESTDB_SUITE, QuestdbServer, start_questdb
from tests.questdb_upstream import Signal, Upstream

ROOT = Path(__file__).resolve().parents[1]
SECTION = "questdb"
PAGE = 20_000
ROWS = 200_000
RSS_FACTOR = 5
STREAM_RATE = 10_000
STREAM_SECONDS = 10.0
STREAM_SAFETY_LAG = 0.25
DELAY_ROWS = 100


async def run(bench: Bench) -> None:
    """Every QuestDB scenario on one server."""
    rows = 20_000 if bench.quick else ROWS
    with tempfile.TemporaryDirectory(prefix="syncd-bench-questdb-") as root, \
            start_questdb(QUESTDB_SUITE, Path(root)) as server:
        await _backfill(bench, server, rows)
        await _catch_up(bench, server, rows // 2)
        await _wal_delay(bench, server)
        await _stream(bench, server)


async def _history(server: QuestdbServer, rows: int) -> None:
    async with Upstream(server.http_port) as upstream:
        await upstream.reset()
        await upstream.generate(rows, datetime.now(UTC) - timedelta(days=30), 2_000_000)


async def _source_pg_rows(server: QuestdbServer) -> list[tuple[Any, ...]]:
    """Every signal as the PG row syncd writes, read from QuestDB (the raw COPY's input)."""
    reader = HttpReader(QuestdbSettings(http_port=server.http_port, request_timeout=300))
    try:
        result = await reader.query(f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM tp_capital_signals ORDER BY ts")
    finally:
        await reader.close()
    return [signal_row(r) for r in result.rows]


async def _backfill(bench: Bench, server: QuestdbServer, rows: int) -> None:
    await _history(server, rows)
    pg_rows = await _source_pg_rows(server)

    async def raw_copy() -> Sample:
        async with fresh_database(bench.dsn) as dsn:
            return Sample(rows / await _raw_copy(dsn, pg_rows))

    def backfill(transport: str, expected: int = rows) -> Any:
        async def method() -> Sample:
            async with fresh_database(bench.dsn) as dsn:
                summary, rss = await asyncio.to_thread(_backfill_process, dsn, server, transport)
            assert summary["rows"] == expected, summary
            return Sample(summary["rows_per_second"], {"peak_rss_mib": rss})

        return method

    lines = await bench.interleave(
        SECTION, f"backfill, {rows:,} rows", {"raw COPY": raw_copy, "syncd backfill via /exec": backfill("http"),
                                              "syncd backfill via PG wire": backfill("pg")},
        unit="rows/s", n=rows,
        notes={"raw COPY": f"the same rows, {PAGE:,} per transaction, into the same table"})
    pg_rows.clear()  # 300 MB of tuples not kept through the next runs
    raw = lines[0].median
    for line in lines[1:]:
        bench.tables.setdefault("questdb backfill ratio", []).append(
            {"method": line.method, "ratio_to_raw_copy": round(line.median / raw, 2)})
    # Memory at RSS_FACTOR times the rows: one run (its rate is a side figure).
    big = rows * RSS_FACTOR
    await _history(server, big)
    sample = await backfill("http", big)()
    bench.lines.append(Line(SECTION, f"backfill, {big:,} rows", "syncd backfill via /exec", "rows/s", big,
                            (sample.value,), _load(), -1.0, {k: (v, v, v) for k, v in sample.extra.items()},
                            f"one run: peak RSS at {RSS_FACTOR}x the rows"))


async def _raw_copy(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    pool = await make_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SELECT signals.ensure_partitions('signals.tp_capital_signals', $1, $2)",
                               rows[0][0], rows[-1][0])
            started = time.perf_counter()
            for i in range(0, len(rows), PAGE):
                async with conn.transaction():
                    await conn.copy_records_to_table("tp_capital_signals", schema_name="signals",
                                                     columns=list(SIGNALS_PG_COLUMNS), records=rows[i:i + PAGE])
            return time.perf_counter() - started
    finally:
        await pool.close()


def _backfill_process(dsn: str, server: QuestdbServer, transport: str) -> tuple[dict[str, Any], float]:
    """`syncd backfill` to completion: (its summary line, its peak RSS in MiB)."""
    env = {**os.environ, "SYNCD_PG_DSN": dsn, "SYNCD_QUESTDB_HTTP_PORT": str(server.http_port),
           "SYNCD_QUESTDB_PG_PORT": str(server.pg_port), "SYNCD_QUESTDB_TRANSPORT": transport}
    cmd = [str(Path(sys.executable).parent / "syncd"), "--log-level", "warning", "backfill", "questdb",
           "--table", "tp_capital_signals", "--page-size", str(PAGE), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    with PeakRss(proc.pid) as peak:
        out = proc.stdout.read()
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"syncd backfill ({transport}) exited {proc.returncode}")
    return orjson.loads(out.decode().strip().splitlines()[-1]), peak.peak_mib


async def _wal_delay(bench: Bench, server: QuestdbServer) -> None:
    """Upstream's one-row INSERTs: ms from `ingested_at` until a SELECT returns the row (per round: p50)."""

    async def once() -> Sample:
        delays: list[float] = []
        async with Upstream(server.http_port) as upstream:
            await upstream.reset()
            for i in range(DELAY_ROWS):
                await upstream.insert(Signal(datetime.now(UTC), asset=f"D{i}"))
                while True:
                    seen = await upstream.rows(f"SELECT ingested_at FROM tp_capital_signals WHERE asset = 'D{i}'")
                    if seen:
                        break
                    await asyncio.sleep(0.001)
                ingested = parse_timestamp(seen[0][0])
                assert ingested is not None
                delays.append((time.time() - ingested.timestamp()) * 1000)
                await asyncio.sleep(0.02)
        ordered = sorted(delays)
        return Sample(statistics.median(ordered), {"p99_ms": _pct(ordered, 0.99), "max_ms": ordered[-1]})

    await bench.repeat(SECTION, "WAL apply delay, one-row INSERT", "ingested_at → visible", once, unit="ms",
                       n=DELAY_ROWS, note=f"{DELAY_ROWS} rows a round, one every 20 ms; safety_lag default 2 s")


async def _catch_up(bench: Bench, server: QuestdbServer, rows: int) -> None:
    """The poller over a backlog of `rows` (pages of PAGE), until it has applied every one; a fresh database a round."""
    await _history(server, rows)

    async def once() -> Sample:
        async with fresh_database(bench.dsn) as dsn:
            pool = await make_pool(dsn)
            settings = QuestdbSettings(http_port=server.http_port, poll_interval=0.1, page_size=PAGE)
            source = SignalsSource(settings)
            epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
            sink = PostgresSink(pool, epoch)
            await source.open(None)
            applied, started = 0, time.perf_counter()
            try:
                async for batch in source.batches():
                    await sink.apply(batch)
                    source.committed(batch)
                    applied += batch.size
                    if applied >= rows:
                        break
            finally:
                await source.close()
                await pool.close()
        return Sample(applied / (time.perf_counter() - started))

    await bench.repeat(SECTION, f"poller catch-up, {rows:,} rows behind", "poller → sink", once, unit="rows/s",
                       n=rows, note=f"pages of {PAGE:,} over /exec")


async def _stream(bench: Bench, server: QuestdbServer) -> None:
    """A round: a fresh table and database, the writer and the poller for STREAM_SECONDS."""

    async def once() -> Sample:
        async with Upstream(server.http_port) as upstream, fresh_database(bench.dsn) as dsn:
            await upstream.reset()
            pool = await make_pool(dsn)
            settings = QuestdbSettings(http_port=server.http_port, poll_interval=0.1, safety_lag=STREAM_SAFETY_LAG,
                                       page_size=PAGE, rescan_interval=60.0, lag_window=60.0)
            epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
            stop = asyncio.Event()
            writer = asyncio.create_task(_writer(upstream, stop))
            try:
                applied, seconds, lags = await _drive(SignalsSource(settings), PostgresSink(pool, epoch))
            finally:
                stop.set()
                written = await writer
                await pool.close()
        ordered = sorted(lags)
        return Sample(applied / seconds, {"lag_p50_s": _pct(ordered, 0.5), "lag_p99_s": _pct(ordered, 0.99),
                                          "lag_max_s": ordered[-1] if ordered else float("nan"),
                                          "written_per_s": written / seconds})

    await bench.repeat(SECTION, f"steady stream, {STREAM_RATE:,} rows/s written", "poller → sink", once,
                       unit="rows/s", n=int(STREAM_RATE * STREAM_SECONDS),
                       note=f"{STREAM_SECONDS:.0f} s a round; safety_lag {STREAM_SAFETY_LAG} s")


async def _writer(upstream: Upstream, stop: asyncio.Event) -> int:
    """1,000 rows every 100 ms, ts = ingested_at = the server's now() (µs apart), one WAL txn each."""
    per_tick, written, tick = STREAM_RATE // 10, 0, time.monotonic()
    while not stop.is_set():
        await upstream.exec(
            "INSERT INTO tp_capital_signals SELECT timestamp_sequence(now(), 10) ts, '@TPCapital_Oficial', "
            "'Swing Trade', rnd_symbol(200, 6, 8, 0), rnd_double() * 10, rnd_double() * 10, rnd_double() * 10, "
            "rnd_double() * 10, rnd_double() * 10, rnd_double() * 10, rnd_str(20, 120, 0), 'forwarder', "
            f"timestamp_sequence(now(), 10) FROM long_sequence({per_tick})")
        written += per_tick
        tick += 0.1
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return written


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


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _load() -> tuple[float, float]:
    load = os.getloadavg()[0]
    return load, load


async def _main(rows_only: bool) -> None:
    from bench.harness import server

    with server() as dsn:
        bench = Bench(dsn, quick=rows_only)
        await bench.find_server()
        await run(bench)
        for line in bench.lines:
            print(line.scenario, "/", line.method, f"{line.median:,.1f} {line.unit}", dict(line.extra), line.note)


if __name__ == "__main__":
    asyncio.run(_main("--quick" in sys.argv))
