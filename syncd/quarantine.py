"""syncd.quarantine: records a source could not apply, held with their raw form and reason.

A held row blocks its key: the LowDB source neither upserts nor deletes that key until the row is
resolved. `replay` and `discard` both resolve it (the first says "fixed, apply the file's current
version", the second "drop this version"); either way the source re-reads the file and applies the
key's current version, quarantining it again if it is still invalid. `accept` resolves it with a
stated coercion (source key → value): the stream applies the held version with those values, and
keeps applying them to that version (recognised by its hash) for as long as the file holds it, as
`verify` and the reverse path's foreign-write check do. `accept` and `discard` are operator
decisions about data, so each writes an audit row (`syncd.audit_log`, op `accept` / `discard`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from syncd.database import Connection
from syncd.tables import record_hash

Resolution = Literal["replayed", "discarded"]
AUDIT_ORIGIN = "quarantine"
"""The origin of the audit rows an operator's resolution writes."""


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
    coercion: dict[str, Any] | None = None
    """The values an `accept` stated (source key → value), for an accepted record."""
    position: Any = None
    """Where the source held the record (a LowDB file's version, a QuestDB row's table, ts, key)."""
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted record version: its hash (the source's row_hash of it) and the stated values."""

    raw_hash: bytes
    coercion: dict[str, Any]


Coercions = dict[tuple[str, str], Accepted]
"""(table_name, key) → the newest accepted version of that key."""


@dataclass(frozen=True, slots=True)
class Held:
    """What a stream's held rows block: keys, and keyless records by their hash."""

    keys: frozenset[tuple[str, str]]
    """(table_name, key) pairs."""
    keyless: frozenset[tuple[str, bytes]]
    """(table_name, record_hash(raw)) of held records that have no key."""
    rows: int = 0
    """Held rows in all (a duplicated id holds one row per version)."""
    accepted: Coercions = field(default_factory=dict)
    """Accepted record versions and their stated coercions (the stream applies them)."""


def stated_for(accepted: Coercions, table: str, key: str | None, digest: bytes) -> dict[str, Any] | None:
    """The values stated for this version (`digest`) of (`table`, `key`), if it is the one accepted."""
    found = accepted.get((table, key)) if key is not None else None
    return found.coercion if found is not None and found.raw_hash == digest else None


_ACCEPTED_SQL = """SELECT DISTINCT ON (table_name, key) 'accepted' AS status, table_name, key, NULL::jsonb AS raw,
                          raw_hash, coercion
                     FROM syncd.quarantine WHERE stream = $1 AND status = 'accepted'
                    ORDER BY table_name, key, id DESC"""


async def held(conn: Connection, stream: str) -> Held:
    """The stream's held rows and accepted versions, read-only (the source calls this; it never
    writes PostgreSQL)."""
    rows = await conn.fetch(
        f"""SELECT status, table_name, key, CASE WHEN key IS NULL THEN raw END AS raw, raw_hash, coercion
              FROM syncd.quarantine WHERE stream = $1 AND status = 'held'
            UNION ALL ({_ACCEPTED_SQL})""",
        stream,
    )
    holding = [r for r in rows if r["status"] == "held"]
    keys = frozenset((r["table_name"], r["key"]) for r in holding if r["key"] is not None)
    keyless = frozenset((r["table_name"], record_hash(r["raw"])) for r in holding if r["key"] is None)
    return Held(keys, keyless, len(holding), _coercions(r for r in rows if r["status"] == "accepted"))


async def accepted(conn: Connection, stream: str) -> Coercions:
    """The stream's accepted record versions (verify and the foreign-write check apply them)."""
    return _coercions(await conn.fetch(_ACCEPTED_SQL, stream))


def _coercions(rows: Iterable[Any]) -> Coercions:
    return {(r["table_name"], r["key"]): Accepted(bytes(r["raw_hash"]), r["coercion"]) for r in rows}


async def list_entries(
    conn: Connection, *, stream: str | None = None, status: str | None = "held", limit: int = 100
) -> list[Entry]:
    """Quarantine rows, newest first; `status=None` lists every status."""
    rows = await conn.fetch(
        f"""SELECT {_ENTRY} FROM syncd.quarantine
            WHERE ($1::text IS NULL OR stream = $1) AND ($2::text IS NULL OR status = $2)
            ORDER BY id DESC LIMIT $3""",
        stream,
        status,
        limit,
    )
    return [Entry(**dict(r)) for r in rows]


_ENTRY = "id, stream, table_name, key, reason, status, created_at, raw, coercion, position, resolved_at"
"""The columns an Entry holds."""


async def resolve(
    conn: Connection, ids: Sequence[int], resolution: Resolution, *, actor: str | None = None
) -> list[int]:
    """Mark held rows replayed or discarded; returns the ids that were held (others are left alone).

    A discard is audited: one `discard` row per record, its old value the held record."""
    rows = await conn.fetch(
        """UPDATE syncd.quarantine SET status = $2, resolved_at = now(), resolved_by = $3
            WHERE id = ANY($1::bigint[]) AND status = 'held' RETURNING id, table_name, key, raw""",
        list(ids),
        resolution,
        actor,
    )
    if resolution == "discarded":
        await conn.executemany(
            """INSERT INTO syncd.audit_log (table_name, key, op, old, origin)
               VALUES ($1, $2, 'discard', $3, $4)""",
            [(r["table_name"], audit_key(r["key"], r["id"]), r["raw"], AUDIT_ORIGIN) for r in rows],
        )
    return sorted(r["id"] for r in rows)


def audit_key(key: str | None, quarantine_id: int) -> str:
    """The audit log's key of a quarantined record: its own, or its quarantine id when it has none."""
    return key if key is not None else f"quarantine:{quarantine_id}"


async def accept(conn: Connection, entry: Entry, coercion: dict[str, Any], raw_hash: bytes, *, actor: str) -> bool:
    """Resolve held `entry` with the stated `coercion` (source key → value) and audit it; False when
    it is no longer held (nothing changed). `raw_hash` is the source's row_hash of `entry.raw`."""
    done = await conn.fetchval(
        """UPDATE syncd.quarantine
              SET status = 'accepted', coercion = $2, raw_hash = $3, resolved_at = now(), resolved_by = $4
            WHERE id = $1 AND status = 'held' RETURNING id""",
        entry.id,
        coercion,
        raw_hash,
        actor,
    )
    if done is None:
        return False
    record = entry.raw if isinstance(entry.raw, dict) else {}
    await conn.execute(
        """INSERT INTO syncd.audit_log (table_name, key, op, old, new, changed_fields, origin)
           VALUES ($1, $2, 'accept', $3, $4, $5, $6)""",
        entry.table_name,
        audit_key(entry.key, entry.id),
        entry.raw,
        {**record, **coercion},
        sorted(coercion),
        AUDIT_ORIGIN,
    )
    return True


async def entries(conn: Connection, ids: Sequence[int], *, lock: bool = False) -> dict[int, Entry]:
    """The quarantine rows of `ids` that exist (row-locked until the transaction ends with `lock`)."""
    rows = await conn.fetch(
        f"SELECT {_ENTRY} FROM syncd.quarantine WHERE id = ANY($1::bigint[]) ORDER BY id"
        + (" FOR UPDATE" if lock else ""),
        list(ids),
    )
    return {r["id"]: Entry(**dict(r)) for r in rows}


async def statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of `ids` that exists (an id missing from the result is unknown)."""
    rows = await conn.fetch("SELECT id, status FROM syncd.quarantine WHERE id = ANY($1::bigint[])", list(ids))
    return {r["id"]: r["status"] for r in rows}


async def streams(conn: Connection) -> set[str]:
    """Every stream that has ever quarantined a record."""
    return {r["stream"] for r in await conn.fetch("SELECT DISTINCT stream FROM syncd.quarantine")}
