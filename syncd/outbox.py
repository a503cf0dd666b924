"""The transactional outbox, consumer side: register, read settled changes, acknowledge, prune.

Capture triggers write one outbox row per real change in the writing transaction itself, tagged
with `syncd.origin` (syncd's own applies say `syncd`, everything else `app` unless it says more).
A consumer's position is a transaction-id watermark (see 0040_cutover.sql): a read returns every
change of transactions in `[acked, settled)`, all of which have ended, so nothing is ever skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncd.database import Connection
from syncd.sink.postgres import ORIGIN


@dataclass(frozen=True, slots=True)
class OutboxRead:
    """Keys changed by others since the consumer's position, and the position to ack after."""

    keys: dict[str, set[str]]
    """Table → keys whose current PostgreSQL state must be propagated."""
    upto: int
    """Settled transaction-id watermark: ack it once `keys` are durable downstream."""
    acked: int
    """The position the read started from."""

    @property
    def empty(self) -> bool:
        """True when there is nothing to propagate."""
        return not any(self.keys.values())


async def register(conn: Connection, consumer: str, tables: Sequence[str]) -> None:
    """Start `consumer` at the current settled watermark (keeps an existing consumer's position)."""
    await conn.execute(
        """INSERT INTO syncd.outbox_consumers (name, acked_txid, tables)
           VALUES ($1, syncd.settled_txid(), $2) ON CONFLICT (name) DO NOTHING""",
        consumer,
        list(tables),
    )


async def drop(conn: Connection, consumer: str) -> None:
    """Forget `consumer`; its unread rows become prunable."""
    await conn.execute("DELETE FROM syncd.outbox_consumers WHERE name = $1", consumer)


async def read(conn: Connection, consumer: str) -> OutboxRead:
    """Distinct keys changed by non-syncd writers in settled transactions past the position."""
    row = await conn.fetchrow(
        "SELECT acked_txid, tables, syncd.settled_txid() AS upto FROM syncd.outbox_consumers WHERE name = $1",
        consumer,
    )
    if row is None:
        raise LookupError(f"outbox consumer {consumer!r} is not registered")
    acked, upto = int(row["acked_txid"]), int(row["upto"])
    keys: dict[str, set[str]] = {t: set() for t in row["tables"]}
    if upto > acked:
        changed = await conn.fetch(
            """SELECT DISTINCT table_name, key FROM syncd.outbox
                WHERE table_name = ANY($1) AND txid >= $2 AND txid < $3 AND origin <> $4""",
            row["tables"],
            acked,
            upto,
            ORIGIN,
        )
        for r in changed:
            keys[r["table_name"]].add(r["key"])
    return OutboxRead(keys, max(upto, acked), acked)


async def ack(conn: Connection, consumer: str, upto: int) -> None:
    """Advance `consumer` to `upto` (call in the transaction that made the read durable)."""
    await conn.execute(
        "UPDATE syncd.outbox_consumers SET acked_txid = $2, updated_at = now() WHERE name = $1 AND acked_txid < $2",
        consumer,
        upto,
    )


async def pending(conn: Connection, consumer: str) -> int:
    """Outbox rows of `consumer`'s tables written by others and not yet acknowledged."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM syncd.outbox o JOIN syncd.outbox_consumers c ON c.name = $1
            WHERE o.table_name = ANY(c.tables) AND o.txid >= c.acked_txid AND o.origin <> $2""",
        consumer,
        ORIGIN,
    )
    return count


async def prune(conn: Connection) -> int:
    """Delete rows every consumer has read (all settled rows when none is registered)."""
    pruned: int = await conn.fetchval("SELECT syncd.prune_outbox()")
    return pruned
