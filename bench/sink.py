"""Sink scenarios: first load, unchanged re-apply and 10% changed, each method beside the others.

Methods, interleaved by `Bench.interleave` (warm-up discarded, order rotated each round):
- raw COPY: binary COPY of the rows into the same indexed, partitioned table, one transaction per
  50k-row batch (first load only: COPY cannot re-apply). The limit for loading.
- sink: `PostgresSink.apply`, one checkpointed 50k-row batch per transaction.
- executemany upsert: `INSERT … ON CONFLICT DO UPDATE … WHERE row_hash IS DISTINCT`, per batch.
- dlt merge (Arrow) and dlt merge (dict rows, at fewer rows): dlt 1.31 in its own venv
  (`.tools/bench-venv`, made by `make bench`), one worker process for every run, see
  bench/dlt_merge.py.

Each in-process method has its own migrated database; before every run its table and the rollups
are truncated and, for the re-apply scenarios, the table is loaded with the base rows by COPY
(untimed). Before a first load the partitions of the rows' months are dropped as well, for every
in-process method alike: a first load or backfill of historical signals finds no partition for
them (TRUNCATE would leave the previous run's). Raw COPY and executemany then create theirs with
`signals.ensure_partitions` inside their timed run, the sink loads the month standalone and attaches
it (syncd/sink/partitions.py). Only the apply is timed.
Each line's `n` is the rows that method applied. A scale curve (sink first load at 10k, 100k and 1M
rows: time, peak RSS growth, fitted exponents) follows; its 100k point is the first-load line's.
Rows are generated once, at the curve's largest size, and sliced (the generator is deterministic).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import orjson

from bench.harness import Bench, Method, PeakRss, Sample, fit, fresh_database, make_pool, rate
from bench.signals import COLUMNS, KEY, TABLE, scenario_rows, signal_rows
from syncd.model import Batch, Checkpoint, Row, TableChanges
from syncd.sink.postgres import PostgresSink

SECTION = "sink"
ROWS = 100_000
SHARE = {"executemany upsert": 50, "dlt merge (dict rows)": 40}
"""Per-row methods run at ROWS / SHARE rows (their rate is per row; at ROWS they would take the
bench past its 20 minutes): executemany is one statement (and one rollup trigger) per row, dlt's
dict path is several times slower than its Arrow path."""
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


_MONTHS = """WITH RECURSIVE month AS (
                  SELECT * FROM signals.month_partition($1::regclass, $2)
                  UNION ALL
                  SELECT next.* FROM month, signals.month_partition($1::regclass, month.hi) AS next
                   WHERE month.hi <= $3)
              SELECT string_agg(format('DROP TABLE IF EXISTS %I.%I', signals.schema_of($1::regclass), name), '; ')
                FROM month"""
"""The statement dropping the partitions of the months from $2 to $3 (ensure_partitions' names)."""

_ROLLUPS = """SELECT string_agg(oid::regclass::text, ', ') FROM pg_class
               WHERE relnamespace = 'reporting'::regnamespace AND relkind = 'r' AND relname LIKE '%\\_rollup'"""


async def _reset(pool: asyncpg.Pool, before: Sequence[Row] | None, rows: Sequence[Row]) -> None:
    """The table empty, its rollups too (TRUNCATE fires no trigger), then `before` loaded by COPY.

    For a first load (`before` None) the partitions of the rows' months go as well: a first load or
    backfill of historical signals finds none, and the sink loads such a month standalone.
    """
    await pool.execute(f"TRUNCATE {TABLE}, {await pool.fetchval(_ROLLUPS)}; DELETE FROM syncd.checkpoints")
    if before is None:
        drop = await pool.fetchval(_MONTHS, TABLE, rows[0][0], rows[-1][0])
        await pool.execute(drop)
    else:
        await _raw_copy(pool, before)
    await pool.execute(f"VACUUM ANALYZE {TABLE}")


def _in_process(pool: asyncpg.Pool, apply: Apply, before: Sequence[Row] | None, rows: Sequence[Row]) -> Method:
    # Re-applying the rows already loaded leaves the table as it was: one reset serves every run.
    stays = before is rows
    reset = [True]

    async def run() -> Sample:
        if reset[0]:
            await _reset(pool, before, rows)
            reset[0] = not stays
        with PeakRss() as peak:
            started = time.perf_counter()
            await apply(pool, rows)
            seconds = time.perf_counter() - started
        return Sample(rate(len(rows), seconds), {"rss_growth_mib": peak.growth_mib})

    return run


class TimedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that adds up, per statement, the wall time its calls took (the sink profile).

    A call's time is the round trip: the server's work, the wire, and for COPY the encoding of the
    records, which asyncpg does while it streams them.
    """

    spent: ClassVar[Counter[str]] = Counter()
    calls: ClassVar[Counter[str]] = Counter()

    async def _timed(self, label: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            TimedConnection.spent[label] += time.perf_counter() - started
            TimedConnection.calls[label] += 1

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """`Connection.execute`, timed."""
        return await self._timed(_label(query), super().execute(query, *args, **kwargs))

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """`Connection.fetch`, timed."""
        return await self._timed(_label(query), super().fetch(query, *args, **kwargs))

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """`Connection.fetchval`, timed."""
        return await self._timed(_label(query), super().fetchval(query, *args, **kwargs))

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """`Connection.fetchrow`, timed."""
        return await self._timed(_label(query), super().fetchrow(query, *args, **kwargs))

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> Any:
        """`Connection.copy_records_to_table`, timed."""
        return await self._timed(f"COPY {table_name}", super().copy_records_to_table(table_name, **kwargs))


_LEADER = "UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch"


def _label(query: str) -> str:
    words = " ".join(query.split())
    if words.startswith("WITH checkpoint"):
        return "prelude: settings, fence, partitions, key probe, checkpoint"
    if words.startswith("SELECT pg_advisory_unlock_all"):
        return "pool: reset on release"
    if words.startswith("ALTER TABLE") and " ADD PRIMARY KEY " in words:
        return "new month: the parent's indexes built on its table"
    return words if len(words) <= 60 else words[:57] + "..."


async def _profile(bench: Bench, dsn: str, base: Sequence[Row], n: int) -> None:
    """Where a 50k-row batch's time goes, per statement, in each scenario (one run each)."""
    pool = await make_pool(dsn, connection_class=TimedConnection)
    table: list[dict[str, Any]] = []
    try:
        for scenario in SCENARIOS:
            before, rows = scenario_rows(scenario, n, base)
            await _reset(pool, before, rows)
            TimedConnection.spent.clear()
            TimedConnection.calls.clear()
            started = time.perf_counter()
            await _sink(pool, rows)
            # The bench's own epoch bump (once per run, not per batch) is left out.
            total = time.perf_counter() - started - TimedConnection.spent.pop(_LEADER, 0.0)
            batches = len(chunks(rows))
            steps = TimedConnection.spent.most_common()
            outside = total - sum(seconds for _, seconds in steps)
            table.append({"scenario": scenario, "step": "whole batch", "ms": 1000 * total / batches, "calls": 1.0})
            table += [{"scenario": scenario, "step": label, "ms": 1000 * seconds / batches,
                       "calls": TimedConnection.calls[label] / batches} for label, seconds in steps]
            table.append({"scenario": scenario, "step": "outside statements (the sink's Python, asyncio)",
                          "ms": 1000 * outside / batches, "calls": None})
    finally:
        await pool.close()
    bench.record("sink profile", table)


class DltWorker:
    """bench/dlt_merge.py in dlt's venv, answering one timed run per request line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    @asynccontextmanager
    async def started(cls, dsn: str) -> AsyncIterator[DltWorker]:
        """The worker for `dsn`, stopped (stdin closed) on exit."""
        # cwd outside the repository: dlt would otherwise look for a .dlt/ config folder there.
        # dlt warns on every Arrow run that it kept its own column hints (signal_key as text, on purpose).
        proc = await asyncio.create_subprocess_exec(
            str(DLT_PYTHON), str(Path(__file__).with_name("dlt_merge.py")), dsn, cwd=tempfile.gettempdir(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**20,
            env={**os.environ, "RUNTIME__LOG_LEVEL": "ERROR"},
        )
        try:
            yield cls(proc)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()

    async def seconds(self, scenario: str, rows: int, kind: str) -> float:
        """One timed dlt merge of the scenario's rows (its untimed preparation done first)."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(orjson.dumps({"scenario": scenario, "rows": rows, "kind": kind}) + b"\n")
        await self._proc.stdin.drain()
        while line := await self._proc.stdout.readline():
            if line.startswith(b'{"seconds"'):
                seconds: float = orjson.loads(line)["seconds"]
                return seconds
        raise RuntimeError(f"dlt merge ({kind}, {scenario}) failed: the worker exited {await self._proc.wait()}")

    def method(self, scenario: str, rows: int, kind: str) -> Method:
        """A bench method timing one run."""

        async def run() -> Sample:
            return Sample(rate(rows, await self.seconds(scenario, rows, kind)))

        return run


async def run(bench: Bench) -> None:
    """Every scenario with every method, then the sink's scale curve."""
    n = 20_000 if bench.quick else ROWS
    sizes = (2_000, 50_000) if bench.quick else tuple(s for s in CURVE if s != n)
    base = signal_rows(max(n, *sizes))
    # A million generated rows are input, not work: keep the collector from scanning them during runs.
    gc.collect()
    gc.freeze()
    try:
        await _measured(bench, base, n, sizes)
    finally:
        gc.unfreeze()


async def _measured(bench: Bench, base: Sequence[Row], n: int, sizes: Sequence[int]) -> None:
    in_process: dict[str, Apply] = {"raw COPY": _raw_copy, "sink": _sink, "executemany upsert": _executemany}
    async with fresh_database(bench.dsn) as a, fresh_database(bench.dsn) as b, fresh_database(bench.dsn) as c:
        pools = {name: await make_pool(dsn) for name, dsn in zip(in_process, (a, b, c), strict=True)}
        try:
            async with _dlt(a) as dlt:
                for scenario in SCENARIOS:
                    await _scenario(bench, scenario, n, base, pools, in_process, dlt)
        finally:
            for pool in pools.values():
                await pool.close()
        await _curve(bench, b, base, sizes, n)
        await _profile(bench, b, base, n)


@asynccontextmanager
async def _dlt(dsn: str) -> AsyncIterator[DltWorker | None]:
    if not DLT_PYTHON.exists():
        yield None
        return
    async with DltWorker.started(dsn) as worker:
        yield worker


async def _scenario(bench: Bench, scenario: str, n: int, base: Sequence[Row], pools: dict[str, asyncpg.Pool],
                    in_process: dict[str, Apply], dlt: DltWorker | None) -> None:
    """One scenario, every method interleaved; each line's n is the rows its method applied."""
    before, rows = scenario_rows(scenario, n, base)
    methods: dict[str, Method] = {}
    sizes: dict[str, int] = {}
    for name, apply in in_process.items():
        if not (name == "raw COPY" and before is not None):
            sizes[name] = m = n // SHARE.get(name, 1)
            loaded = None if before is None else before[:m]
            methods[name] = _in_process(pools[name], apply, loaded, loaded if before is rows else rows[:m])
    if dlt is not None:
        for name, kind in (("dlt merge (Arrow)", "arrow"), ("dlt merge (dict rows)", "dict")):
            sizes[name] = m = n // SHARE.get(name, 1)
            methods[name] = dlt.method(scenario, m, kind)
    await bench.interleave(SECTION, scenario, methods, unit="rows/s", n=sizes)


async def _curve(bench: Bench, dsn: str, base: Sequence[Row], sizes: Sequence[int], n: int) -> None:
    """Sink first load at each size: median seconds, peak RSS growth, and the fitted exponents.

    The point at `n` rows is the first-load scenario's sink line (the same run, measured there).
    """
    pool = await make_pool(dsn)
    points: list[dict[str, Any]] = []
    try:
        for size in sizes:

            async def once(rows: Sequence[Row] = base[:size]) -> Sample:
                await _reset(pool, None, rows)
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
    first = bench.get(SECTION, "first load", "sink")
    if first is not None:
        points.append({"rows": n, "seconds": n / first.median, "rss_growth_mib": first.extra["rss_growth_mib"][1]})
    points.sort(key=lambda p: p["rows"])
    bench.record("sink scale", fit(points, "rows", ("seconds", "rss_growth_mib")))


if __name__ == "__main__":
    print("run through `python -m bench --only sink`", file=sys.stderr)
