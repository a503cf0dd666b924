"""Sink scenario: 1M signal-shaped rows — first load, unchanged re-apply, 10% changed —
each beside raw COPY of the same rows and an `executemany` upsert, in the same run."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

import asyncpg
import orjson

from bench.harness import Measure, Stopwatch, fresh_database, make_pool
from syncd.model import Batch, Checkpoint, Row, TableChanges
from syncd.sink.postgres import PostgresSink

TABLE = "signals.tp_capital_signals"
COLUMNS = (
    "ts", "signal_key", "channel", "signal_type", "asset", "buy_min", "buy_max", "target_1",
    "target_2", "target_final", "stop", "raw_message", "source", "ingested_at", "row_hash",
)
KEY = ("ts", "signal_key")
BATCH_ROWS = 50_000
START = datetime(2025, 9, 1, tzinfo=UTC)


def signal_rows(n: int, *, version: int = 0, changed_every: int = 0) -> list[Row]:
    """`n` rows shaped like QuestDB's tp_capital_signals; every `changed_every`-th row altered."""
    rng = random.Random(42)
    assets = ["BEEFW655", "ABEVK122", "VALEW591", "PETRJ300", "BOVA11"]
    rows: list[Row] = []
    for i in range(n):
        ts = START + timedelta(seconds=i // 3)  # second precision, not unique: like upstream
        ingested = ts + timedelta(microseconds=i % 3 + 1)
        price = round(rng.uniform(0.5, 9.5), 2)
        bumped = version if changed_every and i % changed_every == 0 else 0
        record = {
            "ts": ts.isoformat(), "channel": "@TPCapital_Oficial", "signal_type": "Swing Trade",
            "asset": assets[i % 5], "buy_min": price, "buy_max": price + 0.1, "target_1": price + 0.5,
            "target_2": price + 1.0, "target_final": price + 2.0 + bumped, "stop": price - 0.5,
            "raw_message": f"COMPRA {assets[i % 5]} {price} ALVOS {price + 0.5}/{price + 1.0}",
            "source": "forwarder", "ingested_at": ingested.isoformat(),
        }
        digest = blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        rows.append((ts, ingested.isoformat(), record["channel"], record["signal_type"], record["asset"],
                     price, price + 0.1, price + 0.5, price + 1.0, price + 2.0 + bumped, price - 0.5,
                     record["raw_message"], "forwarder", ingested, digest))
    return rows


def chunks(rows: Sequence[Row]) -> list[Sequence[Row]]:
    """The rows in sink-sized batches."""
    return [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]


async def _sink(pool: asyncpg.Pool, rows: Sequence[Row], watch: Stopwatch) -> None:
    epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    sink = PostgresSink(pool, epoch)
    for n, chunk in enumerate(chunks(rows)):
        batch = Batch(Checkpoint("bench", "signals", {"chunk": n}), [TableChanges(TABLE, COLUMNS, KEY, chunk)])
        with watch.running():
            await sink.apply(batch)


async def _raw_copy(pool: asyncpg.Pool, rows: Sequence[Row], watch: Stopwatch) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT signals.ensure_partitions($1::regclass, $2, $3)", TABLE,
                           rows[0][0], rows[-1][0])
        for chunk in chunks(rows):
            with watch.running():
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "tp_capital_signals", schema_name="signals", columns=list(COLUMNS), records=chunk
                    )


async def _executemany(pool: asyncpg.Pool, rows: Sequence[Row], watch: Stopwatch) -> None:
    cols = ", ".join(COLUMNS)
    params = ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
    sql = (f"INSERT INTO {TABLE} ({cols}) VALUES ({params}) ON CONFLICT (ts, signal_key) "
           f"DO UPDATE SET {updates} WHERE {TABLE}.row_hash IS DISTINCT FROM excluded.row_hash")
    async with pool.acquire() as conn:
        await conn.execute("SELECT signals.ensure_partitions($1::regclass, $2, $3)", TABLE,
                           rows[0][0], rows[-1][0])
        for chunk in chunks(rows):
            with watch.running():
                async with conn.transaction():
                    await conn.executemany(sql, chunk)


async def run(server_dsn: str, n: int) -> list[Measure]:
    """Every method on the same rows, each in its own fresh database."""
    base = signal_rows(n)
    changed = signal_rows(n, version=1, changed_every=10)
    out: list[Measure] = []
    for method, apply in (("raw COPY", _raw_copy), ("sink", _sink), ("executemany upsert", _executemany)):
        async with fresh_database(server_dsn) as dsn:
            pool = await make_pool(dsn)
            try:
                for scenario, rows in (("first load", base), ("unchanged re-apply", base),
                                       ("10% changed", changed)):
                    if method == "raw COPY" and scenario != "first load":
                        continue  # raw COPY cannot re-apply: it is the baseline for loading only
                    watch = Stopwatch()
                    await apply(pool, rows, watch)
                    out.append(Measure(f"sink: {scenario}", method, len(rows), watch.seconds))
            finally:
                await pool.close()
    return out
