"""Reporting scenario: the `reporting.*` signal views at 10M signals, with the plan each query gets.

10M signals over 4 years (48 monthly partitions), 8 channels, 200 assets are generated in
PostgreSQL by `generate_series`, on two connections at once (channels 0-3 and 4-7: the rollup
triggers fold each half in its own statement, as they would two writers' batches, and no rollup row
is shared, so neither waits for the other's locks), then analysed. Each query then runs under
EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) (per-node timing would add two clock reads per row to
what is measured), a warm-up and `Bench.repeats` measured runs; the line gives the server's
execution time, and as side figures the rows the query returns and the time to fetch them all into
this process (what a client pays on top). The "reporting plans" table says how many signal
partitions (or rollup tables) it touched, how (index or sequential scan) and how many rows it
returned.

What "all time" returns: `signals_daily` is one row per day x channel x asset, so all time here is
1,461 days x 200 (channel, asset) pairs = ~292k rows, whatever the number of signals; the rollup
makes its cost follow that, not the 10M. A dashboard reads it per channel or per day x channel,
hence the two extra all-time lines (one channel: ~37k rows; summed over assets: ~12k rows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from bench.harness import Bench, Sample, fresh_database
from syncd.database import connect

SECTION = "reporting"
ROWS = 10_000_000
"""Signals loaded (issue 6: the views must stay fast at 10M)."""
FIRST, YEARS = "2022-01-01", 4
QUERIES = {
    "one channel x one day": "SELECT * FROM reporting.signals_daily_between("
    "'2024-06-10T00:00:00Z', '2024-06-11T00:00:00Z') WHERE channel = 'ch3'",
    "all channels x one day": "SELECT * FROM reporting.signals_daily_between("
    "'2024-06-10T00:00:00Z', '2024-06-11T00:00:00Z')",
    "all channels x one week": "SELECT * FROM reporting.signals_daily_between("
    "'2024-06-10T00:00:00Z', '2024-06-17T00:00:00Z')",
    "signals_by_channel (all time)": "SELECT * FROM reporting.signals_by_channel",
    "signals_daily (all time)": "SELECT * FROM reporting.signals_daily",
    "signals_daily, one channel (all time)": "SELECT * FROM reporting.signals_daily WHERE channel = 'ch3'",
    "signals_daily per day x channel (all time)": "SELECT day, channel, sum(signals) AS signals "
    "FROM reporting.signals_daily GROUP BY day, channel",
}
LOAD_WORK_MEM = "512MB"
"""The fixture's two writers: their transition tables (5M rows each) and the fold's aggregation
stay in memory rather than spill to disk (the bench's own cluster; 24 GiB machine)."""
INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


async def run(bench: Bench) -> None:
    """Load the signals into a fresh database, then one line per query (ms) and its plan."""
    rows = 200_000 if bench.quick else ROWS
    async with fresh_database(bench.dsn) as dsn:
        conn = await connect(dsn)
        try:
            load = await _load(conn, rows, dsn)
            plans = []
            for query, sql in QUERIES.items():
                plan: dict[str, Any] = {}

                async def once(sql: str = sql, plan: dict[str, Any] = plan) -> Sample:
                    plan.update(await _measure(conn, sql))
                    started = time.perf_counter()
                    returned = len(await conn.fetch(sql))
                    fetch_ms = (time.perf_counter() - started) * 1000
                    return Sample(plan["ms"], {"rows": returned, "fetch_ms": fetch_ms})

                await bench.repeat(SECTION, query, "view", once, unit="ms", n=rows)
                plans.append({"query": query, "rows returned": plan["rows"], "signal partitions": plan["partitions"],
                              "rollups": plan["rollups"], "scans": plan["scans"]})
            bench.record("reporting plans", [{"signals": rows, "load_s": round(load)}, *plans])
        finally:
            await conn.close()


async def _load(conn: Any, rows: int, dsn: str) -> float:
    """The signals, generated in PostgreSQL by two writers at once; seconds taken."""
    started = time.perf_counter()
    await conn.execute(
        f"SELECT signals.ensure_partitions('signals.tp_capital_signals', '{FIRST}', "
        f"'{FIRST}'::timestamptz + interval '{YEARS} years')"
    )
    await asyncio.gather(_generate(dsn, rows, "< 4"), _generate(dsn, rows, ">= 4"))
    await conn.execute("ANALYZE signals.tp_capital_signals")
    await conn.execute("VACUUM ANALYZE reporting.signals_daily_rollup, reporting.signals_channel_day_rollup, "
                       "reporting.signals_channel_asset_rollup")
    return time.perf_counter() - started


async def _generate(dsn: str, rows: int, channels: str) -> None:
    """The signals of the channels whose number is `channels` (of `rows`, spread over the years), one INSERT."""
    conn = await connect(dsn)
    try:
        await conn.execute(f"SET work_mem = '{LOAD_WORK_MEM}'")
        await conn.execute(
            f"""INSERT INTO signals.tp_capital_signals
                    (ts, signal_key, channel, asset, buy_min, buy_max, target_1, target_2, target_final, stop,
                     source, row_hash)
                SELECT '{FIRST}'::timestamptz + g * interval '{YEARS} years' / {rows},
                       'k' || g, 'ch' || (g % 8), 'AS' || (g % 200), 10, 11, 12, 13, 14, 9, 'telegram', '\\x00'
                  FROM generate_series(1, {rows}) g WHERE g % 8 {channels}"""
        )
    finally:
        await conn.close()


async def _measure(conn: Any, sql: str) -> dict[str, Any]:
    # syncd's connection decodes json: the plan arrives as a list.
    document = await conn.fetchval(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}")
    nodes = list(_nodes(document[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name", "").startswith("tp_capital_signals")]
    rollups = sorted({n["Relation Name"] for n in nodes if n.get("Relation Name", "").endswith("_rollup")})
    kinds = sorted({n["Node Type"] for n in nodes if n["Node Type"] in INDEX_SCANS or n["Node Type"] == "Seq Scan"})
    return {
        "ms": document[0]["Execution Time"],
        "rows": document[0]["Plan"]["Actual Rows"],
        "partitions": len({n["Relation Name"] for n in scans}),
        "rollups": ", ".join(rollups),
        "scans": ", ".join(kinds),
        "index": bool(scans) and all(n["Node Type"] != "Seq Scan" for n in scans),
    }


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)
