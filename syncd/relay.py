"""The outbox relay: every committed change in `syncd.outbox` published to Kafka, one topic per table.

It is an outbox consumer like the reverse path (`syncd.outbox_consumers`, a transaction-id
watermark), so the outbox is pruned only below what the broker acknowledged. A record's key is the
row key, its value a Debezium-style envelope built by PostgreSQL itself:

    {"before": {...} | null, "after": {...} | null, "op": "c" | "u" | "d" | "r",
     "source": {"table": "schema.table", "txid": 123, "origin": "syncd" | "app" | ...}, "ts_ms": ...}

and its header `id` the outbox id: delivery is at least once (a restart republishes from the
acknowledged position), a consumer dedupes by `id`.

Order per key is commit order: two transactions writing one row are serialised by its row lock,
so the later writer's outbox row is inserted after the earlier one committed and has a higher id.
A pass therefore publishes, in id order, every VISIBLE row at or past the acknowledged position
(not only the settled window), and acknowledges only the settled watermark; transactions above it
that were already published are remembered so the next pass does not repeat them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from syncd import metrics, outbox
from syncd.config import KafkaSettings
from syncd.database import Connection
from syncd.identifiers import quote_ident, quote_table
from syncd.stream import StreamState

log = structlog.get_logger(__name__)

STREAM = "kafka:relay"
"""The relay's stream name: its lease, its /status entry."""
TRANSIENT = (KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_OPS = "CASE op WHEN 'insert' THEN 'c' WHEN 'update' THEN 'u' ELSE 'd' END"
# The envelope is built by PostgreSQL (json keeps the key order given here); Python only forwards bytes.
_CHANGES = f"""
    SELECT id, table_name, key, txid, {_OPS} AS op, extract(epoch FROM created_at) AS created,
           convert_to(json_build_object(
               'before', before, 'after', after, 'op', {_OPS},
               'source', json_build_object('table', table_name, 'txid', txid, 'origin', origin),
               'ts_ms', (extract(epoch FROM created_at) * 1000)::bigint)::text, 'UTF8') AS value
      FROM syncd.outbox
     WHERE txid >= $1 AND txid <> ALL($2::bigint[])
     ORDER BY id"""


def topic_for(prefix: str, table: str) -> str:
    """The topic of a table: `<prefix>.<schema>.<table>`."""
    return f"{prefix}.{table}"


def _snapshot_query(table: str, key_column: str) -> str:
    ident = quote_ident(key_column)
    return f"""
        SELECT t.{ident}::text AS key,
               convert_to(json_build_object(
                   'before', NULL, 'after', to_jsonb(t) - 'row_hash' - 'synced_at', 'op', 'r',
                   'source', json_build_object('table', $1::text, 'txid', txid_current(), 'origin', 'snapshot'),
                   'ts_ms', (extract(epoch FROM now()) * 1000)::bigint)::text, 'UTF8') AS value
          FROM {quote_table(table)} t"""


def _raise_topic_errors(errors: Sequence[Sequence[Any]]) -> None:
    """A topic the broker refused to create (other than one created meanwhile) names itself."""
    for topic, code, *detail in errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            reason = detail[0] if detail and detail[0] else for_code(code).__name__
            raise for_code(code)(f"kafka topic {topic}: {reason}")


class KafkaRelay:
    """Runs the relay until stopped: snapshot once, then passes over the outbox every poll interval."""

    def __init__(self, settings: KafkaSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self._pool = pool
        self.state = StreamState("kafka", STREAM)
        self._producer: Any = None
        self._published: set[int] = set()
        """Transactions at or above the acknowledged watermark whose rows were already published."""
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- Runner -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, create the topics, snapshot on first registration, then relay until stopped."""
        with bound_contextvars(stream=STREAM):
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TRANSIENT),
                wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
                before_sleep=self._note_retry,
            ):
                with attempt:
                    await self._run()

    async def stop(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let the pass in flight reach the broker (up to `timeout`), then cancel."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("relay pass did not finish in time; the next owner republishes it", stream=STREAM)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # -- the work ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"syncd-{self.settings.consumer}",
            enable_idempotence=True,  # acks=all, and a retried batch can neither duplicate nor reorder
            linger_ms=5,
            max_batch_size=1 << 20,
            request_timeout_ms=int(self.settings.request_timeout * 1000),
        )
        try:
            await self._producer.start()
            async with self._pool.acquire() as conn:
                tables = [
                    (r["table_name"], r["key_column"])
                    for r in await conn.fetch("SELECT table_name, key_column FROM syncd.tracked_tables()")
                ]
                await self._ensure_topics([t for t, _ in tables])
                await self._register(conn, tables)
            self.state.caught_up = False
            while not self._stopping:
                published = await self._pass()
                self.state.caught_up = True
                self.state.last_success, self.state.last_error = time.time(), None
                if not published:
                    await asyncio.sleep(self.settings.poll_interval)
        finally:
            await self._producer.stop()

    async def _ensure_topics(self, tables: Sequence[str]) -> None:
        """Create the missing topics, compacted: the latest record per key can rebuild the table."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers,
            request_timeout_ms=int(self.settings.request_timeout * 1000),
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [topic_for(self.settings.topic_prefix, t) for t in tables]
            missing = [t for t in missing if t not in existing]
            if missing:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=self.settings.partitions,
                            replication_factor=self.settings.replication_factor,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                        for t in missing
                    ]
                )
                _raise_topic_errors(response.topic_errors)
                log.info("kafka topics created", topics=missing)
        finally:
            await admin.close()

    async def _register(self, conn: Connection, tables: Sequence[tuple[str, str]]) -> None:
        """First start: register at the settled watermark and publish a consistent snapshot with it.

        Both happen in one REPEATABLE READ transaction, so the snapshot holds every transaction
        below the registered position; a crash before the commit leaves the relay unregistered
        and the snapshot is taken again.
        """
        name = self.settings.consumer
        if await conn.fetchval("SELECT true FROM syncd.outbox_consumers WHERE name = $1", name):
            return
        async with conn.transaction(isolation="repeatable_read"):
            await outbox.register(conn, name, [t for t, _ in tables])
            if self.settings.snapshot:
                for table, key_column in tables:
                    await self._snapshot(conn, table, key_column)
        log.info("relay registered", consumer=name, snapshot=self.settings.snapshot, tables=len(tables))

    async def _snapshot(self, conn: Connection, table: str, key_column: str) -> None:
        topic = topic_for(self.settings.topic_prefix, table)
        cursor = await conn.cursor(_snapshot_query(table, key_column), table)
        while rows := await cursor.fetch(self.settings.batch_size):
            futures = [
                await self._producer.send(topic, r["value"], key=r["key"].encode(), headers=[("snapshot", b"1")])
                for r in rows
            ]
            await asyncio.gather(*futures)
            metrics.RELAY_EVENTS.labels(table, "r").inc(len(rows))

    async def _pass(self) -> int:
        """Publish every visible change past the position; acknowledge the settled watermark."""
        self._idle.clear()
        try:
            async with self._pool.acquire() as conn:
                sent, txids, settled = await self._publish_visible(conn)
                await outbox.ack(conn, self.settings.consumer, settled)
        finally:
            self._idle.set()
        self._published = {t for t in self._published | txids if t >= settled}
        metrics.RELAY_ACKED_TXID.set(settled)
        if not sent:
            metrics.RELAY_LAG.set(0)
        return sent

    async def _publish_visible(self, conn: Connection) -> tuple[int, set[int], int]:
        """(rows published, their transactions, the settled watermark) in one consistent snapshot."""
        sent, txids = 0, set[int]()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(
                "SELECT acked_txid, syncd.settled_txid() AS settled FROM syncd.outbox_consumers WHERE name = $1",
                self.settings.consumer,
            )
            if row is None:
                raise LookupError(f"outbox consumer {self.settings.consumer!r} is not registered")
            acked, settled = int(row["acked_txid"]), int(row["settled"])
            skip = [t for t in self._published if t >= acked]
            cursor = await conn.cursor(_CHANGES, acked, skip)
            while rows := await cursor.fetch(self.settings.batch_size):
                await self._publish(rows)
                sent += len(rows)
                txids.update(int(r["txid"]) for r in rows)
        return sent, txids, max(settled, acked)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> None:
        """Send a chunk and wait until the broker acknowledged all of it."""
        metrics.RELAY_LAG.set(max(0.0, time.time() - float(rows[0]["created"])))
        prefix, tombstones = self.settings.topic_prefix, self.settings.tombstones
        futures = []
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            topic, key, headers = topic_for(prefix, r["table_name"]), r["key"].encode(), [("id", str(r["id"]).encode())]
            futures.append(await self._producer.send(topic, r["value"], key=key, headers=headers))
            if tombstones and r["op"] == "d":
                futures.append(await self._producer.send(topic, None, key=key, headers=headers))
            counts[(r["table_name"], r["op"])] = counts.get((r["table_name"], r["op"]), 0) + 1
        await asyncio.gather(*futures)
        for (table, op), n in counts.items():
            metrics.RELAY_EVENTS.labels(table, op).inc(n)
        self.state.batches += 1

    def _note_retry(self, retry: RetryCallState) -> None:
        exc = retry.outcome.exception() if retry.outcome else None
        metrics.RETRIES.labels("relay").inc()
        self.state.last_error = str(exc)
        log.warning("relay failed, retrying", error=str(exc))
