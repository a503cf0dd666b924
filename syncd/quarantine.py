"""syncd.quarantine: records a source could not apply, held with their raw form and reason.

A held row blocks its key: the LowDB source neither upserts nor deletes that key until the row is
resolved. `replay` and `discard` both resolve it (the first says "fixed, apply the file's current
version", the second "drop this version"); either way the source re-reads the file and applies the
key's current version, quarantining it again if it is still invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from syncd.database import Connection
from syncd.tables import record_hash

Resolution = Literal["replayed", "discarded"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One syncd.quarantine row."""

    id: int
    stream: str
    table_name: str
    key: str | None
    reason: str
    status: str
    created_at: datetime
    raw: Any


@dataclass(frozen=True, slots=True)
class Held:
    """What a stream's held rows block: keys, and keyless records by their hash."""

    keys: frozenset[tuple[str, str]]
    """(table_name, key) pairs."""
    keyless: frozenset[tuple[str, bytes]]
    """(table_name, record_hash(raw)) of held records that have no key."""
    rows: int = 0
    """Held rows in all (a duplicated id holds one row per version)."""


async def held(conn: Connection, stream: str) -> Held:
    """The stream's held rows, read-only (the source calls this; it never writes PostgreSQL)."""
    rows = await conn.fetch(
        """SELECT table_name, key, CASE WHEN key IS NULL THEN raw END AS raw
             FROM syncd.quarantine WHERE stream = $1 AND status = 'held'""",
        stream,
    )
    keys = frozenset((r["table_name"], r["key"]) for r in rows if r["key"] is not None)
    keyless = frozenset((r["table_name"], record_hash(r["raw"])) for r in rows if r["key"] is None)
    return Held(keys, keyless, len(rows))


async def list_entries(
    conn: Connection, *, stream: str | None = None, status: str | None = "held", limit: int = 100
) -> list[Entry]:
    """Quarantine rows, newest first; `status=None` lists every status."""
    rows = await conn.fetch(
        """SELECT id, stream, table_name, key, reason, status, created_at, raw
             FROM syncd.quarantine
            WHERE ($1::text IS NULL OR stream = $1) AND ($2::text IS NULL OR status = $2)
            ORDER BY id DESC LIMIT $3""",
        stream,
        status,
        limit,
    )
    return [Entry(**dict(r)) for r in rows]


async def resolve(conn: Connection, ids: Sequence[int], resolution: Resolution) -> list[int]:
    """Mark held rows replayed or discarded; returns the ids that were held (others are left alone)."""
    rows = await conn.fetch(
        """UPDATE syncd.quarantine SET status = $2, resolved_at = now()
            WHERE id = ANY($1::bigint[]) AND status = 'held' RETURNING id""",
        list(ids),
        resolution,
    )
    return sorted(r["id"] for r in rows)


async def statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of `ids` that exists (an id missing from the result is unknown)."""
    rows = await conn.fetch("SELECT id, status FROM syncd.quarantine WHERE id = ANY($1::bigint[])", list(ids))
    return {r["id"]: r["status"] for r in rows}


async def streams(conn: Connection) -> set[str]:
    """Every stream that has ever quarantined a record."""
    return {r["stream"] for r in await conn.fetch("SELECT DISTINCT stream FROM syncd.quarantine")}
