"""Relay scenario: the sink's rows/s into a tracked table beside the outbox relay's events/s to Kafka.

Each round empties the workspace items table and the outbox, registers the relay at the current
position, then times two things one after the other on the same rows:
- sink: `PostgresSink.apply` of N new workspace items in 5,000-row batches (the capture triggers
  write one outbox row per item in the same transactions);
- relay: `KafkaRelay` from its start until it has acknowledged every one of those N changes, i.e.
  the broker (a real Kafka 4.x on loopback, `make tools`) confirmed each record.
The topics are created in the discarded warm-up round, so the rounds time publishing only.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path

import asyncpg

from bench.harness import Bench, Sample, fresh_database, make_pool, rate
from syncd import outbox
from syncd.config import KafkaSettings
from syncd.model import Batch, Checkpoint, Row, TableChanges
from syncd.relay import KafkaRelay
from syncd.sink.postgres import PostgresSink
from tests.kafka_broker import KafkaBroker

SECTION = "relay"
TABLE = "workspace.workspace_items"
COLUMNS = ("id", "title", "category", "priority", "status", "tags", "created_at", "extra", "row_hash")
BATCH_ROWS = 5_000
CONSUMER = "bench-relay"


def items(n: int, round_no: int) -> list[Row]:
    """N workspace items, distinct per round (so each round's outbox rows are all new)."""
    created = datetime(2025, 10, 23, tzinfo=UTC)
    return [
        (f"r{round_no}-{i}", f"title {i}", "dashboard", "medium", "new", ["bench"], created, {},
         blake2b(f"{round_no}-{i}".encode(), digest_size=16).digest())
        for i in range(n)
    ]


async def _reset(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {TABLE}, syncd.outbox, syncd.checkpoints, syncd.audit_log")
    async with pool.acquire() as conn:
        await outbox.drop(conn, CONSUMER)
        await outbox.register(conn, CONSUMER, [TABLE])


async def _apply(pool: asyncpg.Pool, rows: list[Row]) -> float:
    """Seconds the sink took to commit `rows`."""
    epoch = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    sink = PostgresSink(pool, epoch)
    started = time.perf_counter()
    for n in range(0, len(rows), BATCH_ROWS):
        changes = TableChanges(TABLE, COLUMNS, ("id",), rows[n : n + BATCH_ROWS])
        await sink.apply(Batch(Checkpoint("bench", "items", {"n": n}), [changes]))
    return time.perf_counter() - started


async def _relay(pool: asyncpg.Pool, settings: KafkaSettings) -> float:
    """Seconds from the relay's start until it acknowledged every outbox row."""
    last = await pool.fetchval("SELECT max(txid) FROM syncd.outbox")
    relay = KafkaRelay(settings, pool)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    try:
        while await pool.fetchval("SELECT acked_txid FROM syncd.outbox_consumers WHERE name = $1", CONSUMER) <= last:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await relay.stop(task, 5.0)


async def run(bench: Bench) -> None:
    """The sink and the relay on N new rows each round, interleaved."""
    # 30k: a round applies the rows twice (the relay's are its untimed input) and relays them once,
    # about a minute at 100k on a shared machine; four rounds of that would not fit the bench's 20 min.
    n = 10_000 if bench.quick else 30_000
    with tempfile.TemporaryDirectory(prefix="syncd-bench-kafka-") as root:
        broker = KafkaBroker(Path(root))
        broker.format()
        broker.start()
        try:
            await broker.until_ready()
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap, consumer=CONSUMER, snapshot=False,
                                     poll_interval=0.01)
            async with fresh_database(bench.dsn) as dsn:
                pool = await make_pool(dsn, size=4)
                rounds = iter(range(1_000_000))

                async def sink() -> Sample:
                    await _reset(pool)
                    return Sample(rate(n, await _apply(pool, items(n, next(rounds)))))

                async def relay() -> Sample:
                    await _reset(pool)
                    await _apply(pool, items(n, next(rounds)))  # not timed: the changes to relay
                    return Sample(rate(n, await _relay(pool, settings)))

                try:
                    await bench.interleave(
                        SECTION, f"{n:,} workspace items",
                        {"sink (PostgreSQL, tracked table)": sink, "relay (outbox → Kafka)": relay},
                        unit="rows/s", n=n,
                        notes={"sink (PostgreSQL, tracked table)": "items + their outbox rows, 5,000 per transaction",
                               "relay (outbox → Kafka)": "events/s: until the broker acknowledged every change"},
                    )
                finally:
                    await pool.close()
        finally:
            broker.stop()
