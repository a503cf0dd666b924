"""The outbox relay against a real Kafka broker: envelope, snapshot, kill and restart, order, pruning."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from syncd import outbox
from syncd.config import KafkaSettings
from syncd.relay import KafkaRelay, topic_for
from tests.kafka_broker import KafkaBroker, read_topic

TABLE = "workspace.workspace_categories"


def relay_settings(kafka: KafkaBroker, **overrides: Any) -> KafkaSettings:
    """A relay of its own (topic prefix and consumer name unique to the test), polling fast."""
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "topic_prefix": f"t{tag}",
        "consumer": f"relay-{tag}",
        "poll_interval": 0.05,
        "batch_size": 50,
    }
    return KafkaSettings(**{**base, **overrides})


class RunningRelay:
    """A relay task; `kill()` cancels it wherever it is (no graceful stop), as a crash would."""

    def __init__(self, settings: KafkaSettings, pool: asyncpg.Pool) -> None:
        self.relay = KafkaRelay(settings, pool)
        self.task = asyncio.create_task(self.relay.run())

    async def kill(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def relays(pool: asyncpg.Pool) -> AsyncIterator[list[RunningRelay]]:
    """Relays a test starts; every one still running is killed at the end."""
    started: list[RunningRelay] = []
    yield started
    for relay in started:
        await relay.kill()


async def until(check: Any, timeout: float, what: str, relays: list[RunningRelay]) -> None:
    """Poll an async condition with a deadline; a relay that died fails the test with its error."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        for relay in relays:
            if relay.task.done() and not relay.task.cancelled():
                relay.task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def registered(pool: asyncpg.Pool, consumer: str) -> bool:
    """True once the relay committed its registration (and its snapshot)."""
    return bool(await pool.fetchval("SELECT true FROM syncd.outbox_consumers WHERE name = $1", consumer))


async def insert_category(conn: asyncpg.Connection | Any, key: str, order: int) -> None:
    await conn.execute(
        """INSERT INTO workspace.workspace_categories (id, name, sort_order) VALUES ($1, $1, $2)
           ON CONFLICT (id) DO UPDATE SET sort_order = excluded.sort_order""",
        key,
        order,
    )


def envelopes(records: list[Any]) -> list[tuple[str, dict[str, Any] | None, dict[str, bytes]]]:
    """(key, decoded value or None for a tombstone, headers) per record, in topic order."""
    return [(r.key.decode(), orjson.loads(r.value) if r.value is not None else None, dict(r.headers)) for r in records]


async def test_snapshot_then_changes_as_debezium_envelopes(
    kafka: KafkaBroker, pool: asyncpg.Pool, relays: list[RunningRelay]
) -> None:
    await insert_category(pool, "before-relay", 1)
    settings = relay_settings(kafka)
    relays.append(RunningRelay(settings, pool))
    await until(lambda: registered(pool, settings.consumer), 30, "relay registration", relays)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'workspace-api'")
        await insert_category(conn, "added", 2)
        await insert_category(conn, "before-relay", 3)
        await conn.execute("DELETE FROM workspace.workspace_categories WHERE id = 'added'")

    topic = topic_for(settings.topic_prefix, TABLE)
    records = envelopes(await read_topic(kafka.bootstrap, topic, lambda r: len(r) >= 5))
    # One partition per key: order holds per key, not across keys.
    by_key: dict[str, list[Any]] = {}
    for key, value, headers in records:
        by_key.setdefault(key, []).append((value, headers))
    snapshot, update = by_key["before-relay"]
    assert snapshot[0]["op"] == "r"
    assert snapshot[0]["before"] is None
    assert snapshot[0]["after"]["sort_order"] == 1
    assert "id" not in snapshot[1]
    assert update[0]["op"] == "u"
    assert (update[0]["before"]["sort_order"], update[0]["after"]["sort_order"]) == (1, 3)
    assert update[0]["source"]["origin"] == "workspace-api"
    assert update[0]["source"]["table"] == TABLE
    assert "row_hash" not in update[0]["after"]
    created, deleted, tombstone = by_key["added"]
    assert [created[0]["op"], deleted[0]["op"], tombstone[0]] == ["c", "d", None]
    assert deleted[0]["before"]["id"] == "added"
    assert deleted[0]["after"] is None
    assert deleted[1]["id"] == tombstone[1]["id"]
    ids = {int(v[1]["id"]) for v in (update, created, deleted)}
    outbox_ids = {r["id"] for r in await pool.fetch("SELECT id FROM syncd.outbox WHERE origin = 'workspace-api'")}
    assert ids == outbox_ids
    assert len({v[0]["source"]["txid"] for v in (update, created, deleted)}) == 1  # one transaction
    assert isinstance(created[0]["ts_ms"], int)


async def write_changes(pool: asyncpg.Pool, keys: list[str], transactions: int, seed: int) -> None:
    """Transactions updating random keys; some take their txid early and commit late (txid order
    then differs from commit order, which per-key order must not follow)."""
    rng = random.Random(seed)
    async with pool.acquire() as conn:
        for i in range(transactions):
            async with conn.transaction():
                if rng.random() < 0.3:
                    await conn.fetchval("SELECT txid_current()")
                    await asyncio.sleep(rng.random() * 0.02)
                for key in sorted(rng.sample(keys, 3)):  # one lock order: no deadlocks
                    await insert_category(conn, key, seed * 100_000 + i)


async def test_relay_killed_mid_stream_restarts_without_loss_and_in_key_order(
    kafka: KafkaBroker, pool: asyncpg.Pool, relays: list[RunningRelay]
) -> None:
    settings = relay_settings(kafka, snapshot=False)
    keys = [f"k{i}" for i in range(12)]
    relays.append(RunningRelay(settings, pool))
    await until(lambda: registered(pool, settings.consumer), 30, "relay registration", relays)
    start_txid = await pool.fetchval("SELECT acked_txid FROM syncd.outbox_consumers WHERE name = $1", settings.consumer)
    writers = asyncio.gather(*(write_changes(pool, keys, 200, seed) for seed in (1, 2)))

    async def acked_some() -> bool:
        acked = await pool.fetchval("SELECT acked_txid FROM syncd.outbox_consumers WHERE name = $1", settings.consumer)
        return bool(acked > start_txid)

    await until(acked_some, 30, "the relay to acknowledge a first pass", relays)
    await relays[0].kill()
    # Killed: nothing it had not acknowledged may be pruned.
    acked = await pool.fetchval("SELECT acked_txid FROM syncd.outbox_consumers WHERE name = $1", settings.consumer)
    unacked = await pool.fetchval("SELECT count(*) FROM syncd.outbox WHERE txid >= $1", acked)
    acknowledged = {r["id"] for r in await pool.fetch("SELECT id FROM syncd.outbox WHERE txid < $1", acked)}
    async with pool.acquire() as conn:
        await outbox.prune(conn)
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox WHERE txid >= $1", acked) >= unacked
    await writers
    relays.append(RunningRelay(settings, pool))

    wanted = acknowledged | {r["id"] for r in await pool.fetch("SELECT id FROM syncd.outbox")}
    assert len(wanted) == 2 * 200 * 3
    topic = topic_for(settings.topic_prefix, TABLE)

    def seen_all(records: list[Any]) -> bool:
        return wanted <= {int(dict(r.headers)["id"]) for r in records}

    records = envelopes(await read_topic(kafka.bootstrap, topic, seen_all, timeout=60))
    # Exactly once after deduplication by the outbox id, with nothing extra.
    first: dict[int, tuple[str, dict[str, Any]]] = {}
    for key, value, headers in records:
        assert value is not None
        first.setdefault(int(headers["id"]), (key, value))
    assert set(first) == wanted
    # Per key, the deduplicated sequence is the outbox (commit) order, and each change starts where
    # the previous one ended.
    per_key: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    seen: set[int] = set()
    for key, value, headers in records:
        change_id = int(headers["id"])
        if change_id not in seen:
            seen.add(change_id)
            per_key.setdefault(key, []).append((change_id, value))
    for key, changes in per_key.items():
        assert [c for c, _ in changes] == sorted(c for c, _ in changes), key
        for (_, previous), (_, current) in itertools.pairwise(changes):
            assert current["before"] == previous["after"], key
    # The last change per key is the table's current row.
    rows = {r["id"]: r["sort_order"] for r in await pool.fetch(f"SELECT id, sort_order FROM {TABLE}")}
    assert {k: v[-1][1]["after"]["sort_order"] for k, v in per_key.items()} == rows

    # Once acknowledged, the relayed rows are pruned.
    async def acked_everything() -> bool:
        acked = await pool.fetchval("SELECT acked_txid FROM syncd.outbox_consumers WHERE name = $1", settings.consumer)
        return bool(acked > await pool.fetchval("SELECT coalesce(max(txid), 0) FROM syncd.outbox"))

    await until(acked_everything, 30, "the restarted relay to acknowledge everything", relays)
    async with pool.acquire() as conn:
        await outbox.prune(conn)
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox") == 0


async def test_a_topic_the_broker_refuses_is_named_and_retried(
    kafka: KafkaBroker, pool: asyncpg.Pool, relays: list[RunningRelay]
) -> None:
    """Replication factor 3 on a one-broker cluster: the error names the topic, the relay keeps trying."""
    settings = relay_settings(kafka, replication_factor=3)
    relays.append(RunningRelay(settings, pool))

    async def error_named() -> bool:
        return f"kafka topic {settings.topic_prefix}." in (relays[0].relay.state.last_error or "")

    await until(error_named, 30, "the refused topic in the relay's last error", relays)
    assert "replication factor" in (relays[0].relay.state.last_error or "")
    assert not relays[0].task.done()
    assert not await registered(pool, settings.consumer)
