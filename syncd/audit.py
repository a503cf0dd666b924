"""syncd.audit: the history of one record, read from syncd.audit_log.

The capture triggers (`syncd.track_changes(..., audit => true)`, 0002 and 0096) write one audit
row per real change of a Workspace or Documentation row: the operation, the origin (`syncd.origin`
of the writing transaction: `syncd` for what syncd mirrored, else `app` or what the writer set), the
old and new row as JSON and, for updates, the names of the columns that changed. `syncd quarantine
accept` and `discard` add rows of their own (op `accept`/`discard`, origin `quarantine`): the held
record as old, for an accept the record with the stated values as new and their fields as changed.
This module resolves a table name and reads those rows back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from syncd.database import Connection
from syncd.errors import SyncdError

# Tables that have syncd's capture triggers in audit mode: the trigger's second argument (0096).
_AUDITED_TABLES_SQL = """
SELECT DISTINCT format('%s.%s', n.nspname, c.relname) AS table_name
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE t.tgname = 'syncd_capture_ins'
   AND (syncd.trigger_args(t.tgargs, t.tgnargs))[2] = 'audit'
 ORDER BY 1
"""

_HISTORY_SQL = """
SELECT id, at, op, origin, actor, txid, changed_fields, old, new
  FROM (SELECT * FROM syncd.audit_log
         WHERE table_name = $1 AND key = $2
         ORDER BY id DESC LIMIT $3) newest
 ORDER BY id
"""


class UnknownTable(SyncdError, LookupError):
    """`name` is not an audited table; `known` lists the ones that are."""

    def __init__(self, name: str, known: list[str], reason: str = "is not an audited table") -> None:
        listing = ", ".join(known) if known else "none"
        super().__init__(f"table {name!r} {reason} (audited tables: {listing})")
        self.name = name
        self.known = known


@dataclass(frozen=True, slots=True)
class Change:
    """One field's value before and after the operation (None where the row did not exist)."""

    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One syncd.audit_log row, with the fields it changed."""

    id: int
    at: datetime
    op: str
    origin: str
    actor: str
    txid: int | None
    changed_fields: list[str]
    """Columns an update changed; for an insert or delete, every column the row had a value in."""
    changes: dict[str, Change] = field(default_factory=dict)
    """old -> new of each of `changed_fields`."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "op": self.op,
            "origin": self.origin,
            "actor": self.actor,
            "txid": self.txid,
            "changed_fields": self.changed_fields,
            "changes": {k: {"old": c.old, "new": c.new} for k, c in self.changes.items()},
        }


async def audited_tables(conn: Connection) -> list[str]:
    """Schema-qualified names of every table whose changes are written to syncd.audit_log."""
    rows = await conn.fetch(_AUDITED_TABLES_SQL)
    return [r["table_name"] for r in rows]


async def resolve_table(conn: Connection, name: str) -> str:
    """`schema.table` for `name`, given qualified or bare; raises UnknownTable otherwise.

    A qualified name that is no longer audited but still has history in the log is accepted too,
    so the history of a table whose trigger was dropped stays readable.
    """
    known = await audited_tables(conn)
    if "." in name:
        if name in known:
            return name
        has_history = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM syncd.audit_log WHERE table_name = $1)", name)
        if has_history:
            return name
        raise UnknownTable(name, known)
    matches = [t for t in known if t.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownTable(name, matches, reason="is ambiguous: qualify it with its schema")
    raise UnknownTable(name, known)


async def history(conn: Connection, table: str, key: str, *, limit: int = 50) -> list[AuditEntry]:
    """The newest `limit` audit rows of (`table`, `key`), oldest first.

    `table` must be schema-qualified (see `resolve_table`); `key` is the record's key as text.
    """
    rows = await conn.fetch(_HISTORY_SQL, table, key, limit)
    return [_entry(r) for r in rows]


def _entry(row: Any) -> AuditEntry:
    old: dict[str, Any] = _document(row["old"])
    new: dict[str, Any] = _document(row["new"])
    whole_row = new if row["op"] == "insert" else old
    # An update (and an operator's `accept`) names the fields it changed; an insert, delete or
    # `discard` stands for the whole record.
    fields = (
        list(row["changed_fields"])
        if row["op"] in ("update", "accept")
        else sorted(k for k, v in whole_row.items() if v is not None)
    )
    changes = {f: Change(old.get(f), new.get(f)) for f in fields}
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        op=row["op"],
        origin=row["origin"],
        actor=row["actor"],
        txid=row["txid"],
        changed_fields=fields,
        changes=changes,
    )


def _document(value: Any) -> dict[str, Any]:
    """A jsonb column as a dict: decoded by syncd's codec, or JSON text without it."""
    if value is None:
        return {}
    if isinstance(value, str):
        decoded: Any = orjson.loads(value)
        return decoded if isinstance(decoded, dict) else {}
    return value if isinstance(value, dict) else {}
