"""Sink scenarios: first load, unchanged re-apply and 10% changed, each method beside the others.

Methods, interleaved by `Bench.interleave` (warm-up discarded, order rotated each round):
- raw COPY: binary COPY of the rows into the same indexed, partitioned table, one transaction per
  50k-row batch (first load only: COPY cannot re-apply). The limit for loading.
- sink: `PostgresSink.apply`, one checkpointed 50k-row batch per transaction.
- executemany upsert: `INSERT … ON CONFLICT DO UPDATE … WHERE row_hash IS DISTINCT`, per batch.
- dlt merge (Arrow) and dlt merge (dict rows, at a quarter of the rows): dlt 1.31 in its own venv
  (`.tools/bench-venv`, made by `make bench`), see bench/dlt_merge.py.

Each in-process method has its own migrated database; before every run its table is truncated and,
for the re-apply scenarios, loaded with the base rows by COPY (untimed). Only the apply is timed.
A scale curve (sink first load at 10k, 100k and 1M rows: time, peak RSS growth, fitted exponents)
follows.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.harness import Bench, Method, PeakRss, Sample, fit, fresh_database, make_pool, rate
from bench.signals import COLUMNS, KEY, TABLE, scenario_rows
from syncd.model import Batch, Checkpoint, Row, TableChanges
from syncd.sink.postgres import PostgresSink

SECTION = "sink"
ROWS = 100_000
SHARE = {"executemany upsert": 300, "dlt merge (dict rows)": 20}
"""Per-row methods run at ROWS / SHARE rows (their rate is per row; at ROWS they would take the
bench past its 20 minutes): executemany fires the table's statement-level rollup trigger once per
row, dlt's dict path is several times slower than its Arrow path."""
BATCH_ROWS = 50_000
SCENARIOS = ("first load", "unchanged re-apply", "10% changed")
CURVE = (10_000, 100_000, 1_000_000)
DLT_PYTHON = Path(__file__).resolve().parents[1] / ".tools" / "bench-venv" / "bin" / "python"

Apply = Callable[[asyncpg.Pool, Sequence[Row]], Awaitable[None]]


def chunks(rows: Sequence[Row]) -> list[Sequence[Row]]:
    """The rows in sink-sized batches."""
    return [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]


async def _sink(pool: asyncpg.Pool, rows: Sequence[Row]) -> None:
    epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    sink = PostgresSink(pool, epoch)
    for n, chunk in enumerate(chunks(rows)):
        changes = TableChanges(TABLE, COLUMNS, KEY, chunk)
        await sink.apply(Batch(Checkpoint("bench", "signals", {"chunk": n}), [changes]))


async def _raw_copy(pool: asyncpg.Pool, rows: Sequence[Row]) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT signals.ensure_partitions($1::regclass, $2, $3)", TABLE, rows[0][0], rows[-1][0])
        for chunk in chunks(rows):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "tp_capital_signals", schema_name="signals", columns=list(COLUMNS), records=chunk
                )


async def _executemany(pool: asyncpg.Pool, rows: Sequence[Row]) -> None:
    cols = ", ".join(COLUMNS)
    params = ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
    sql = (f"INSERT INTO {TABLE} ({cols}) VALUES ({params}) ON CONFLICT (ts, signal_key) "
           f"DO UPDATE SET {updates} WHERE {TABLE}.row_hash IS DISTINCT FROM excluded.row_hash")
    async with pool.acquire() as conn:
        await conn.execute("SELECT signals.ensure_partitions($1::regclass, $2, $3)", TABLE, rows[0][0], rows[-1][0])
        for chunk in chunks(rows):
            async with conn.transaction():
                await conn.executemany(sql, chunk)


async def _reset(pool: asyncpg.Pool, before: Sequence[Row] | None) -> None:
    await pool.execute(f"TRUNCATE {TABLE}; DELETE FROM syncd.checkpoints")
    if before is not None:
        await _raw_copy(pool, before)
    await pool.execute(f"VACUUM ANALYZE {TABLE}")


def _in_process(pool: asyncpg.Pool, apply: Apply, before: Sequence[Row] | None, rows: Sequence[Row]) -> Method:
    async def run() -> Sample:
        await _reset(pool, before)
        started = time.perf_counter()
        await apply(pool, rows)
        return Sample(rate(len(rows), time.perf_counter() - started))

    return run


def _dlt(dsn: str, scenario: str, n: int, kind: str) -> Method:
    async def run() -> Sample:
        script = str(Path(__file__).with_name("dlt_merge.py"))
        # cwd outside the repository: dlt would otherwise look for a .dlt/ config folder there.
        out = await asyncio.to_thread(
            subprocess.run, [str(DLT_PYTHON), script, dsn, scenario, str(n), kind],
            capture_output=True, text=True, check=False, cwd=tempfile.gettempdir(),
        )
        if out.returncode != 0:
            raise RuntimeError(f"dlt merge ({kind}, {scenario}) failed: {out.stderr.strip().splitlines()[-1:]}")
        return Sample(rate(n, orjson.loads(out.stdout.strip().splitlines()[-1])["seconds"]))

    return run


async def run(bench: Bench) -> None:
    """Every scenario with every method, then the sink's scale curve."""
    n = 20_000 if bench.quick else ROWS
    in_process: dict[str, Apply] = {"raw COPY": _raw_copy, "sink": _sink, "executemany upsert": _executemany}
    async with fresh_database(bench.dsn) as a, fresh_database(bench.dsn) as b, fresh_database(bench.dsn) as c:
        pools = {name: await make_pool(dsn) for name, dsn in zip(in_process, (a, b, c), strict=True)}
        try:
            for scenario in SCENARIOS:
                before, rows = scenario_rows(scenario, n)
                methods: dict[str, Method] = {}
                for name, apply in in_process.items():
                    if not (name == "raw COPY" and before is not None):
                        m = n // SHARE.get(name, 1)
                        methods[name] = _in_process(pools[name], apply, before and before[:m], rows[:m])
                notes = {name: f"at {n // share:,} rows" for name, share in SHARE.items()}
                if DLT_PYTHON.exists():
                    methods["dlt merge (Arrow)"] = _dlt(a, scenario, n, "arrow")
                    methods["dlt merge (dict rows)"] = _dlt(a, scenario, n // SHARE["dlt merge (dict rows)"], "dict")
                await bench.interleave(SECTION, scenario, methods, unit="rows/s", n=n, notes=notes)
        finally:
            for pool in pools.values():
                await pool.close()
        await _curve(bench, b)


async def _curve(bench: Bench, dsn: str) -> None:
    """Sink first load at each size: median seconds, peak RSS growth, and the fitted exponents."""
    sizes = (2_000, 10_000, 50_000) if bench.quick else CURVE
    pool = await make_pool(dsn)
    points: list[dict[str, Any]] = []
    try:
        for size in sizes:
            _, rows = scenario_rows("first load", size)

            async def once(rows: Sequence[Row] = rows) -> Sample:
                await _reset(pool, None)
                with PeakRss() as peak:
                    started = time.perf_counter()
                    await _sink(pool, rows)
                    seconds = time.perf_counter() - started
                return Sample(seconds, {"rss_growth_mib": peak.growth_mib})

            line = await bench.repeat("sink scale", f"first load {size:,}", "sink", once, unit="s", n=size,
                                      warmup=size < 1_000_000)
            points.append({"rows": size, "seconds": line.median, "rss_growth_mib": line.extra["rss_growth_mib"][1]})
    finally:
        await pool.close()
    bench.record("sink scale", fit(points, "rows", ("seconds", "rss_growth_mib")))


if __name__ == "__main__":
    print("run through `python -m bench --only sink`", file=sys.stderr)
