"""`syncd explain TABLE KEY`: where a PostgreSQL row came from.

Every batch commits its rows and its stream's checkpoint in one transaction, and both stamp that
transaction's `now()` (the row's `synced_at`, the checkpoint's `updated_at`). So when the two are
equal, the checkpoint's position (LowDB file and version sha, or QuestDB cursor) is the very source
version that wrote the row; otherwise a later batch has moved the checkpoint on and the row was
written by an earlier version. (`xmin` cannot tell: the first-load COPY runs in a savepoint, whose
rows carry the subtransaction's id.) Around that: the transaction id, the row's last audited change,
its outbox events and its quarantine history.

`syncd.documents` (layout `generic`) holds every generic file's collections under
`(collection, id)`: its KEY is `COLLECTION/ID`, and the collection names the stream. Those rows are
not change-captured (no audit or outbox rows), so their provenance is the row and the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from syncd.config import Config
from syncd.database import Connection
from syncd.errors import SyncdError
from syncd.identifiers import quote_ident, quote_table
from syncd.questdb.sql import SIGNALS_TABLE, VERSIONED
from syncd.tables import specs_for_layout

_SIGNALS_PG = "signals.tp_capital_signals"
DOCUMENTS = "syncd.documents"


class UnknownSyncedTable(SyncdError, LookupError):
    """`name` is no table syncd writes; `known` lists those it does."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"table {name!r} is not written by syncd (tables: {', '.join(known)})")
        self.name = name
        self.known = known


class UnknownDocument(SyncdError, LookupError):
    """A `syncd.documents` key that is not `COLLECTION/ID` of a configured generic collection."""

    def __init__(self, key: str, collections: list[str]) -> None:
        super().__init__(
            f"key {key!r} of {DOCUMENTS} is not COLLECTION/ID of a configured collection"
            f" (collections: {', '.join(collections) or 'none: no lowdb entry has layout generic'})"
        )
        self.key = key


@dataclass(frozen=True, slots=True)
class Target:
    """A synced table: the stream that writes it and its key column."""

    table: str
    stream: str
    source: str
    key_column: str
    collections: Mapping[str, str] = field(default_factory=dict)
    """syncd.documents only: the stream writing each collection (its rows are keyed COLLECTION/ID)."""

    def locate(self, key: str) -> Located:
        """Where row `key` lives: its stream, the row's filter and its quarantine entries' names."""
        if self.table != DOCUMENTS:
            where = f"t.{quote_ident(self.key_column)} = $1"
            return Located(self.stream, where, (key,), self.table, key, captured=True)
        collection, slash, record = key.partition("/")
        stream = self.collections.get(collection)
        if not slash or not record or stream is None:
            raise UnknownDocument(key, sorted(self.collections))
        where = "t.collection = $1 AND t.id = $2"
        return Located(stream, where, (collection, record), f"{DOCUMENTS}:{collection}", record, captured=False)


@dataclass(frozen=True, slots=True)
class Located:
    """One row of a target: the stream that writes it, how to find it, its quarantine entries' names."""

    stream: str
    where: str
    args: tuple[str, ...]
    quarantine_table: str
    quarantine_key: str
    captured: bool
    """Its table is change-captured: audit and outbox rows exist (not for syncd.documents)."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Everything syncd knows about where one row came from."""

    table: str
    key: str
    stream: str
    present: bool
    captured: bool = True
    row_txid: int | None = None
    synced_at: str | None = None
    position: dict[str, Any] | None = None
    position_at: datetime | None = None
    position_wrote_row: bool = False
    last_change: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The document `--json` prints (datetimes as ISO text)."""
        return {
            "table": self.table,
            "key": self.key,
            "stream": self.stream,
            "present": self.present,
            "change_captured": self.captured,
            "row_txid": self.row_txid,
            "synced_at": self.synced_at,
            "source_position": self.position,
            "source_position_at": None if self.position_at is None else self.position_at.isoformat(),
            "source_position_wrote_row": self.position_wrote_row,
            "last_change": _jsonable(self.last_change),
            "outbox_events": [_jsonable(e) for e in self.events],
            "quarantine": [_jsonable(q) for q in self.quarantine],
        }


def targets(config: Config) -> dict[str, Target]:
    """Every table syncd writes, by qualified name: the configured LowDB files' tables and QuestDB's."""
    found: dict[str, Target] = {}
    documents: dict[str, str] = {}
    for entry in config.lowdb:
        for spec in specs_for_layout(entry.layout, entry.collections):
            if spec.document:
                documents[spec.collection] = entry.name
            else:
                found[spec.table] = Target(spec.table, entry.name, "lowdb", "id")
    if documents:
        found[DOCUMENTS] = Target(DOCUMENTS, "", "lowdb", "id", documents)
    found[_SIGNALS_PG] = Target(_SIGNALS_PG, f"questdb:{SIGNALS_TABLE}", "questdb", "signal_key")
    for name, versioned in VERSIONED.items():
        found[versioned.pg_table] = Target(versioned.pg_table, f"questdb:{name}", "questdb", "id")
    return found


def resolve(config: Config, name: str) -> Target:
    """The target for `schema.table` or a bare table name."""
    known = targets(config)
    matches = [t for q, t in known.items() if name in (q, q.split(".", 1)[1])]
    if len(matches) != 1:
        raise UnknownSyncedTable(name, sorted(known))
    return matches[0]


async def explain(conn: Connection, target: Target, key: str, *, events: int = 20) -> Provenance:
    """Read the row's provenance (read-only); UnknownDocument for a syncd.documents key of no collection."""
    located = target.locate(key)
    row = await conn.fetchrow(
        f"""SELECT t.xmin::text::bigint AS xmin, t.synced_at
              FROM {quote_table(target.table)} t WHERE {located.where} LIMIT 1""",
        *located.args,
    )
    checkpoint = await conn.fetchrow(
        """SELECT position, updated_at FROM syncd.checkpoints
            WHERE source = $1 AND stream = $2""",
        target.source,
        located.stream,
    )
    change, outbox = await _changes(conn, target, key, events) if located.captured else (None, [])
    held = await conn.fetch(
        """SELECT id, status, reason, position, created_at, resolved_at FROM syncd.quarantine
            WHERE table_name = $1 AND key = $2 ORDER BY id""",
        located.quarantine_table,
        located.quarantine_key,
    )
    synced_at = None if row is None else row["synced_at"]
    wrote = synced_at is not None and checkpoint is not None and checkpoint["updated_at"] == synced_at
    row_txid = None if row is None else int(row["xmin"])
    if change is not None and synced_at is not None and change["at"] == synced_at:
        row_txid = int(change["txid"])  # the top-level txid of that transaction, as audit and outbox show it
    return Provenance(
        table=target.table,
        key=key,
        stream=located.stream,
        present=row is not None,
        captured=located.captured,
        row_txid=row_txid,
        synced_at=None if synced_at is None else synced_at.isoformat(),
        position=None if checkpoint is None else dict(checkpoint["position"]),
        position_at=None if checkpoint is None else checkpoint["updated_at"],
        position_wrote_row=wrote,
        last_change=None if change is None else dict(change),
        events=[dict(r) for r in reversed(outbox)],
        quarantine=[dict(r) for r in held],
    )


async def _changes(
    conn: Connection, target: Target, key: str, events: int
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """The row's last audited change and its newest outbox events (newest first)."""
    change = await conn.fetchrow(
        """SELECT at, op, origin, actor, txid, changed_fields FROM syncd.audit_log
            WHERE table_name = $1 AND key = $2 ORDER BY id DESC LIMIT 1""",
        target.table,
        key,
    )
    outbox = await conn.fetch(
        """SELECT id, op, origin, txid, created_at FROM syncd.outbox
            WHERE table_name = $1 AND key = $2 ORDER BY id DESC LIMIT $3""",
        target.table,
        key,
        events,
    )
    return change, outbox


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}
