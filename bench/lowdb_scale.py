"""LowDB at scale: the daemon's first load of big files, and the diff's time and memory curve.

First load: a file of 10k, 100k and 500k workspace items (~580 bytes each in lowdb's 2-space
layout: 500k records are ~277 MB) in a fresh database; a `syncd run` process starts and the time
until its checkpoint holding the file's SHA-256 is committed (the load's real end, checked on
PostgreSQL itself, with every record's row present) and its peak RSS (sampled every 5 ms) are
taken. `/readyz` is not the end: it is also 200 while the instance is not yet leading the stream.

Diff curve: in this process, `VersionReader.read` + `diff` of a file of 1k, 10k, 100k and 500k
records, first against nothing applied (the start-up diff) and then after a one-record edit;
median seconds and RSS growth per size, with log-log exponents.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.harness import Bench, PeakRss, Sample, fit, fresh_database
from bench.lowdb_latency import start_daemon
from syncd.lowdb.diff import Applied, Diff, apply_to, content_hash, diff
from syncd.lowdb.reader import VersionReader
from syncd.quarantine import Held
from syncd.tables import TableSpec, specs_for_layout
from tests.lowdb_files import write_v7

SECTION = "lowdb"
LOADS = (10_000, 100_000, 500_000)
CURVE = (1_000, 10_000, 100_000, 500_000)
DESCRIPTION = "Melhorar performance das queries do TimescaleDB com índices compostos e particionamento " * 3


def record(i: int) -> dict[str, Any]:
    """A workspace item with a longer description (upstream's items carry a paragraph)."""
    return {
        "id": f"item-1762600000000-{i:07d}", "title": f"Idea {i}", "description": DESCRIPTION,
        "category": "banco-dados", "priority": "critical", "status": "new",
        "tags": ["performance", "database"], "createdAt": "2025-10-23T22:46:19.745Z", "updatedAt": None,
    }


def write_file(path: Path, n: int, title: str | None = None) -> list[dict[str, Any]]:
    """Write an n-record workspace file the lowdb@7 way; optionally retitle record 0."""
    records = [record(i) for i in range(n)]
    if title is not None:
        records[0] = {**records[0], "title": title}
    write_v7(path, orjson.dumps({"items": records, "categories": []}, option=orjson.OPT_INDENT_2))
    return records


async def run(bench: Bench) -> None:
    """First loads through the daemon, then the in-process diff curve."""
    loads = (2_000, 10_000) if bench.quick else LOADS
    points: list[dict[str, Any]] = []
    for n in loads:
        work = Path(tempfile.mkdtemp(prefix="syncd-bench-lowdb-load-"))
        path = work / "library.json"
        write_file(path, n)
        size = path.stat().st_size / 2**20
        sha = content_hash(path.read_bytes())

        async def first_load(work: Path = work, path: Path = path, size: float = size, sha: str = sha,
                             n: int = n) -> Sample:
            async with fresh_database(bench.dsn) as dsn:
                conn = await asyncpg.connect(dsn)
                started = time.perf_counter()
                daemon, _ = start_daemon(work, path, dsn)
                try:
                    with PeakRss(daemon.pid) as peak:
                        await _wait_loaded(conn, daemon, sha)
                        seconds = time.perf_counter() - started
                    rows = await conn.fetchval("SELECT count(*) FROM workspace.workspace_items")
                finally:
                    await conn.close()
                    daemon.terminate()
                    daemon.wait(30)
            if rows != n:
                raise RuntimeError(f"first load committed {rows} of {n} records")
            return Sample(seconds, {"peak_rss_mib": peak.peak_mib, "rss_over_file": peak.peak_mib / size})

        try:
            line = await bench.repeat(SECTION, f"first load, {n:,} records", "daemon", first_load, unit="s", n=n,
                                      note=f"file {size:,.0f} MiB", warmup=n < 500_000)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # 500k records are 286 MB
        points.append({"records": n, "file_mib": round(size, 1), "seconds": round(line.median, 2),
                       "peak_rss_mib": round(line.extra["peak_rss_mib"][1]),
                       "rss_over_file": round(line.extra["rss_over_file"][1], 2)})
    bench.record("lowdb first load", fit(points, "records", ("seconds", "peak_rss_mib")))
    await _diff_curve(bench)


async def _wait_loaded(conn: asyncpg.Connection, daemon: subprocess.Popen[bytes], sha: str,
                       deadline: float = 900) -> None:
    """Until the stream's committed checkpoint holds the file's SHA-256 (polled every 10 ms)."""
    end = time.monotonic() + deadline
    query = "SELECT position ->> 'sha' FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = 'bench'"
    while await conn.fetchval(query) != sha:
        if daemon.poll() is not None:
            raise RuntimeError(f"syncd exited with {daemon.returncode}")
        if time.monotonic() > end:
            raise TimeoutError("the first load never committed")
        await asyncio.sleep(0.01)


async def _diff_curve(bench: Bench) -> None:
    specs = specs_for_layout("workspace", ())
    points: list[dict[str, Any]] = []
    for n in (1_000, 10_000) if bench.quick else CURVE:
        work = Path(tempfile.mkdtemp(prefix="syncd-bench-lowdb-diff-"))
        path = work / "library.json"

        async def first(n: int = n, path: Path = path) -> Sample:
            write_file(path, n)
            with PeakRss() as peak:
                started = time.perf_counter()
                await asyncio.to_thread(_read_and_diff, VersionReader(specs), path, specs, {})
                seconds = time.perf_counter() - started
            return Sample(seconds, {"rss_growth_mib": peak.growth_mib})

        async def edit(n: int = n, path: Path = path) -> Sample:
            write_file(path, n)
            reader, applied = VersionReader(specs), {}
            apply_to(applied, (await asyncio.to_thread(_read_and_diff, reader, path, specs, {})).tables,
                     with_deletes=True)
            write_file(path, n, title="edited")
            started = time.perf_counter()
            result = await asyncio.to_thread(_read_and_diff, reader, path, specs, applied)
            seconds = time.perf_counter() - started
            if sum(len(t.upserts) for t in result.tables) != 1:
                raise RuntimeError("a one-record edit did not diff to one upsert")
            return Sample(seconds)

        try:
            lines = await bench.interleave(SECTION, f"diff, {n:,} records", {"whole file": first, "one edit": edit},
                                           unit="s", n=n)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        points.append({"records": n, "whole_s": round(lines[0].median, 4), "edit_s": round(lines[1].median, 4),
                       "rss_growth_mib": round(lines[0].extra["rss_growth_mib"][1], 1)})
    bench.record("lowdb diff scale", fit(points, "records", ("whole_s", "edit_s", "rss_growth_mib")))


def _read_and_diff(reader: VersionReader, path: Path, specs: Sequence[TableSpec], applied: Applied) -> Diff:
    return diff(reader.read(path), specs, applied, Held(frozenset(), frozenset()))
