"""LowDB scenario: single-record edit → PostgreSQL commit latency, against the real daemon process.

For files of 1k, 10k and 100k records, a `syncd run` subprocess mirrors the file into a fresh
database; the bench then edits one record at a time the way lowdb@7 writes (temp file + rename) and
waits, LISTENing on its own connection, for the NOTIFY a row trigger (the bench's, in its database
only) sends when the daemon's transaction commits the edit. Latency runs from the rename to that
notification: the commit itself, seen without a poll loop taking CPU from the daemon and
PostgreSQL on a 2-core machine. A warm-up round of edits is discarded, then each of
`Bench.repeats` rounds gives its p50 and p99. The daemon's RSS is read after the edits, then one
parity check of the file is timed: the daemon's periodic verify (disabled during the edits so its
whole-file read does not land inside an edit's latency) costs that much every `verify_interval`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil

from bench.harness import Bench, Sample, fresh_database
from syncd.cluster import free_port
from syncd.config import LowdbSettings
from syncd.cutover.verify import verify_file
from syncd.database import connect
from tests.lowdb_files import write_v7

SECTION = "lowdb"
SIZES = ((1_000, 20), (10_000, 15), (100_000, 10))
"""(records in the file, single-record edits per round)."""
SYNCD = Path(sys.executable).with_name("syncd")


def record(i: int, title: str = "t") -> dict[str, Any]:
    """A workspace item shaped like upstream's (~300 bytes of JSON)."""
    return {
        "id": f"item-1762600000000-{i:07d}",
        "title": title,
        "description": "Melhorar performance das queries do TimescaleDB",
        "category": "banco-dados",
        "priority": "critical",
        "status": "new",
        "tags": ["performance", "database"],
        "createdAt": "2025-10-23T22:46:19.745Z",
        "updatedAt": None,
    }


async def run(bench: Bench) -> None:
    """One line per file size: per-round p50 (the value), p99 and max; daemon RSS and one verify."""
    sizes = ((1_000, 5), (10_000, 5)) if bench.quick else SIZES
    for records, edits in sizes:
        await _one_size(bench, records, edits)


async def _one_size(bench: Bench, n: int, edits: int) -> None:
    async with fresh_database(bench.dsn) as dsn:
        work = Path(tempfile.mkdtemp(prefix="syncd-bench-lowdb-"))
        path = work / "library.json"
        records = [record(i) for i in range(n)]
        write_v7(path, orjson.dumps({"items": records, "categories": []}, option=orjson.OPT_INDENT_2))
        daemon, port = start_daemon(work, path, dsn)
        conn = await asyncpg.connect(dsn)
        committed = await _listen(conn)
        counter = iter(range(1_000_000))
        try:
            await wait_ready(port, daemon)
            await _wait_title(conn, records[-1]["id"], "t", deadline=60)

            async def round_of_edits() -> Sample:
                ms = sorted([1000 * await _edit(committed, path, records, next(counter)) for _ in range(edits)])
                p50 = statistics.median(ms)
                return Sample(p50, {"p50_ms": p50, "p99_ms": _p99(ms), "max_ms": ms[-1]})

            line = await bench.repeat(SECTION, f"edit → commit, {n:,} records", "daemon", round_of_edits,
                                      unit="ms", n=n)
            rss = psutil.Process(daemon.pid).memory_info().rss / 2**20
            verify = await _verify_seconds(dsn, path)
            size = path.stat().st_size / 2**20
        finally:
            await conn.close()
            daemon.terminate()
            daemon.wait(30)
            shutil.rmtree(work, ignore_errors=True)  # a 100k-record file is 35 MB
    bench.tables.setdefault("lowdb latency", []).append(
        {"records": n, "file_mib": round(size, 1), "edits": edits * (bench.repeats + 1),
         "p50_ms": round(line.extra["p50_ms"][1], 1), "p99_ms": round(line.extra["p99_ms"][1], 1),
         "max_ms": round(line.extra["max_ms"][2], 1), "daemon_rss_mib": round(rss), "verify_ms": round(verify * 1000)}
    )


def _p99(ms: list[float]) -> float:
    return ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]


async def _verify_seconds(dsn: str, path: Path) -> float:
    """One parity check of the file (what daemon.verify_interval runs), which must come out clean."""
    conn = await connect(dsn)
    try:
        start = time.perf_counter()
        parity = await verify_file(conn, LowdbSettings(name="bench", path=path, layout="workspace"))
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
    if not parity.clean:
        raise RuntimeError("bench file and PostgreSQL differ")
    return elapsed


NOTIFY_TRIGGER = """
CREATE FUNCTION public.bench_notify_title() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_edit', NEW.id || ' ' || NEW.title);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_title AFTER UPDATE OF title ON workspace.workspace_items
    FOR EACH ROW EXECUTE FUNCTION public.bench_notify_title();
"""
"""Delivered to a listener when the transaction commits, never before (the bench's database only)."""


async def _listen(conn: asyncpg.Connection) -> asyncio.Queue[tuple[str, float]]:
    """Install the bench's trigger; committed edits arrive as (`id title`, arrival time)."""
    await conn.execute(NOTIFY_TRIGGER)
    queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    await conn.add_listener("bench_edit", lambda *args: queue.put_nowait((args[3], time.perf_counter())))
    return queue


async def _edit(committed: asyncio.Queue[tuple[str, float]], path: Path, records: list[dict[str, Any]],
                k: int) -> float:
    """Change one record's title, write the file, wait until its commit is notified; seconds."""
    i = (k * 7919) % len(records)
    title = f"edit {k}"
    records[i] = {**records[i], "title": title, "updatedAt": "2025-11-08T10:00:00.000Z"}
    data = orjson.dumps({"items": records, "categories": []}, option=orjson.OPT_INDENT_2)
    await asyncio.sleep(0.05)  # let the previous version settle so each edit is its own version
    write_v7(path, data)
    start = time.perf_counter()
    expected = f"{records[i]['id']} {title}"
    async with asyncio.timeout(30):
        while True:
            payload, at = await committed.get()
            if payload == expected:
                return at - start


async def _wait_title(conn: asyncpg.Connection, key: str, title: str, *, deadline: float) -> None:
    end = time.monotonic() + deadline
    while await conn.fetchval("SELECT title FROM workspace.workspace_items WHERE id = $1", key) != title:
        if time.monotonic() > end:
            raise TimeoutError(f"{key} never reached title {title!r}")
        await asyncio.sleep(0.0005)


def start_daemon(work: Path, path: Path, dsn: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = work / "syncd.toml"
    config.write_text(
        f'[postgres]\ndsn = "postgresql://overridden"\n\n[[lowdb]]\nname = "bench"\npath = "{path}"\n'
        'layout = "workspace"\n'
    )
    # The periodic parity check re-reads the whole file: it is timed on its own (`verify ms`).
    env = {**os.environ, "SYNCD_PG_DSN": dsn, "SYNCD_HTTP_LISTEN": f"127.0.0.1:{port}",
           "SYNCD_DAEMON_VERIFY_INTERVAL": "0"}
    log = (work / "syncd.log").open("wb")
    proc = subprocess.Popen(
        [str(SYNCD), "--log-level", "warning", "run", "--config", str(config)], env=env, stdout=log, stderr=log
    )
    return proc, port


async def wait_ready(port: int, proc: subprocess.Popen[bytes], deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"syncd exited with {proc.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("syncd never became ready")
