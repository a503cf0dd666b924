"""QuestDB rows PostgreSQL refuses: quarantined one by one, kept out of later batches, replayed.

QuestDB's columns are typed, yet PostgreSQL can still refuse a row: a NUL in a STRING (PostgreSQL
text cannot hold one), a symbol too long for an index entry, a value a CHECK constraint refuses (a
bot status upstream invented), a trigger's rule. The sink bisects a refused batch to those rows
(`syncd.sink.culprits`); the source notes them here, rewinds to its committed cursor, and the page
read again carries each refused row as a quarantine record instead of an upsert, so the watermark
moves past it in the same transaction and the stream flows on. Nothing is lost: the record holds
the row as QuestDB has it, the reason, and its QuestDB position (table, timestamp, key, row hash).

A held row's key stays out of every later batch (the pages, the lag-window rescan, the reconcile's
repair, a versioned table's re-read) and out of the reconcile's count, so it is not refused and
quarantined again. `syncd quarantine replay` unblocks it and the source reads it from QuestDB once
more (quarantined again if PostgreSQL still refuses it); `discard` drops that version for good
(a later version of the key, with another hash, flows). A transient failure never gets here: the
sink retries those, and only a refusal about the data (SQLSTATE 22, 23, 54) is bisected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import compress
from typing import Any

import asyncpg
import structlog

from syncd.database import PG_ERRORS, Connection, connect
from syncd.errors import RejectedRow
from syncd.model import Batch, QuarantinedRecord, Row, TableChanges
from syncd.poison import storable, unstorable_text
from syncd.questdb.reader import format_timestamp

log = structlog.get_logger(__name__)

PG_TIMEOUT = 10.0
"""Bound on reading the quarantine state (and on connecting for it)."""

_STATE = """
    SELECT table_name, key, status, position, resolved_at FROM syncd.quarantine
     WHERE stream = ANY($1::text[]) AND key IS NOT NULL
       AND (status IN ('held', 'discarded')
            OR (status = 'replayed' AND resolved_at > coalesce($2::timestamptz, '-infinity')))
     ORDER BY id"""


@dataclass(frozen=True, slots=True)
class Replay:
    """A quarantined row an operator replayed: read it from QuestDB again."""

    table: str
    """The PostgreSQL table."""
    key: str
    position: Mapping[str, Any]
    """The QuestDB position the record was quarantined with (`questdb_table`, `ts`, ...)."""


class Refusals:
    """One stream's refused and held rows; reads syncd.quarantine (never writes it) when it has a DSN."""

    def __init__(self, stream: str, questdb_table: str, pg_dsn: str | None) -> None:
        self.stream = stream
        self.questdb_table = questdb_table
        self.pg_dsn = pg_dsn
        self._refused: dict[tuple[str, str], tuple[bytes, str]] = {}
        """(table, key) → (row hash, reason) of rows the sink found refused, not yet quarantined."""
        self._held: set[tuple[str, str]] = set()
        self._discarded: set[tuple[str, str, bytes]] = set()
        self._conn: asyncpg.Connection | None = None
        self.replayed_through: datetime | None = None
        """resolved_at of the newest replay the last refresh returned (None: none)."""

    @property
    def held(self) -> int:
        """Held quarantine rows of this stream (as last read, plus those committed since)."""
        return len(self._held)

    def note(self, rows: Iterable[RejectedRow]) -> None:
        """The sink found these rows refused on their own: the next batch holding them quarantines them."""
        for row in rows:
            self._refused[(row.table, _key_text(row.key))] = (row.row_hash, f"[{row.sqlstate}] {row.reason}")

    def committed(self, batch: Batch) -> None:
        """The batch's quarantine records are durable: their keys are held from now on."""
        for record in batch.quarantine:
            if record.key is not None:
                self._held.add((record.table, record.key))
                self._refused.pop((record.table, record.key), None)

    def blocks(self, table: str, key: str, row_hash: bytes) -> bool:
        """Whether this version of row `key` stays out: its key is held, or this version discarded."""
        return (table, key) in self._held or (table, key, row_hash) in self._discarded

    def holds(self, table: str, key: str) -> bool:
        """Whether row `key` is held in quarantine (not merely a discarded version of it)."""
        return (table, key) in self._held

    def rebuilt(self, batch: Batch, rows: Sequence[RejectedRow]) -> Batch | None:
        """`batch` again with `rows` (refused on their own) as quarantine records instead of upserts;
        None when none of them is in it (the refusal has another cause)."""
        self.note(rows)
        tables, quarantine = [], list(batch.quarantine)
        for changes in batch.tables:
            kept, records = self.sift(changes)
            tables.append(kept)
            quarantine += records
        if len(quarantine) == len(batch.quarantine):
            return None
        return replace(batch, tables=tables, quarantine=quarantine)

    def sift(self, changes: TableChanges) -> tuple[TableChanges, list[QuarantinedRecord]]:
        """`changes` without the rows that stay out, and a quarantine record for each refused one."""
        if not (self._refused or self._held or self._discarded) or not changes.upserts:
            return changes, []
        table, columns = changes.table, changes.columns
        at_key, at_hash = columns.index(changes.key[-1]), columns.index("row_hash")
        keep, records = [], []
        for row in changes.upserts:
            key, digest = key_text(row[at_key]), bytes(row[at_hash])
            refused = self._refused.get((table, key))
            if refused is not None and refused[0] == digest:
                records.append(self._record(changes, row, key, refused[1]))
                keep.append(False)
            else:
                keep.append(not self.blocks(table, key, digest))
        if all(keep):
            return changes, records
        return replace(changes, upserts=list(compress(changes.upserts, keep))), records

    def _record(self, changes: TableChanges, row: Row, key: str, reason: str) -> QuarantinedRecord:
        values = dict(zip(changes.columns, row, strict=True))
        digest = bytes(values.pop("row_hash"))
        raw = {name: _jsonable(value) for name, value in values.items()}
        deleted = values.get("deleted_at") is not None and "signal_key" in values
        stamp = values.get("ts", values.get("updated_at"))
        position = {
            "questdb_table": f"{self.questdb_table}_deleted" if deleted else self.questdb_table,
            "ts": _jsonable(stamp),
            "key": {changes.key[-1]: key},
            "row_hash": digest.hex(),
        }
        log.warning("questdb row quarantined", stream=self.stream, table=changes.table, key=key, reason=reason)
        return QuarantinedRecord(changes.table, key, storable(raw), reason, position)

    async def refresh(self, since: str | None, conn: Connection | None = None) -> list[Replay]:
        """Re-read the held and discarded rows (the stream's, and those its backfill quarantined)
        through `conn` or the own connection; the rows replayed after `since` (a resolved_at)."""
        if conn is None and self.pg_dsn is None:
            return []
        streams = [self.stream, f"backfill:{self.stream}"]
        try:
            if conn is None:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.pg_dsn or "", timeout=PG_TIMEOUT)
                conn = self._conn
            rows = await conn.fetch(_STATE, streams, _since(since), timeout=PG_TIMEOUT)
        except (*PG_ERRORS, OSError, TimeoutError) as exc:
            # A stale set only keeps rows out longer, or replays them a poll later: safe.
            log.warning("could not read quarantine state", stream=self.stream, error=str(exc))
            await self.close()
            return []
        self._held = {(r["table_name"], r["key"]) for r in rows if r["status"] == "held"}
        self._discarded = {
            (r["table_name"], r["key"], bytes.fromhex(r["position"].get("row_hash") or ""))
            for r in rows
            if r["status"] == "discarded" and isinstance(r["position"], dict)
        }
        replayed = [r for r in rows if r["status"] == "replayed"]
        self.replayed_through = max((r["resolved_at"] for r in replayed), default=None)
        return [Replay(r["table_name"], r["key"], r["position"] or {}) for r in replayed]

    async def close(self) -> None:
        """Close the read connection."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


def _key_text(key: Sequence[Any]) -> str:
    """The quarantine key of a row: its last key column (signals: signal_key; versioned: id)."""
    return key_text(key[-1])


def key_text(value: Any) -> str:
    """`value` as syncd.quarantine.key holds it: JSON-escaped if text cannot hold it (a NUL in an id)."""
    text = str(value)
    return json.dumps(text)[1:-1] if unstorable_text(text, "key") else text


def _jsonable(value: Any) -> Any:
    return format_timestamp(value) if isinstance(value, datetime) else value


def _since(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
