"""Load a month with no partition yet as a standalone table, indexed, then attached (0100).

COPY into a live partition maintains each of its indexes row by row and fires the parent's
statement-level triggers. A batch whose rows all fall in one month that has no partition goes instead
into a plain table made like the parent (`signals.begin_partition_load`, which decides under the
lock ATTACH takes and creates it with a CHECK of the month's bound), gets the parent's indexes built
on it, each in one sorted pass, the primary key first (a repeated key fails there, before the other
indexes are built, and the sink retries the batch through its merge), and is attached
(`signals.finish_partition_load`): ATTACH adopts those indexes as children of the parent's and, the
CHECK implying the bound, scans nothing. ATTACH fires no trigger, so the path is taken only when
every INSERT trigger of the parent is one this module reproduces (`REPRODUCERS`), and those are
reproduced over the new partition. Everything runs in the batch's transaction: a batch rejected
on the way leaves no partition behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.database import Connection
from syncd.identifiers import quote_table


@dataclass(frozen=True, slots=True)
class ChildIndex:
    """One of the parent's indexes as the DDL building its match on a partition: `{verb} <partition> {tail}`."""

    verb: str
    """`ALTER TABLE` (a primary key, unique or exclusion constraint), `CREATE [UNIQUE] INDEX ON`."""
    tail: str
    """`ADD PRIMARY KEY (…)`, `USING btree (…)`: the definition PostgreSQL prints for the parent's."""

    def sql(self, partition: str) -> str:
        """The statement building this index on `partition` (quoted, qualified)."""
        return f"{self.verb} {partition} {self.tail}"


_CHILD_INDEXES = """
SELECT CASE WHEN k.oid IS NOT NULL THEN 'ALTER TABLE'
            WHEN i.indisunique THEN 'CREATE UNIQUE INDEX ON' ELSE 'CREATE INDEX ON' END AS verb,
       CASE WHEN k.oid IS NOT NULL THEN 'ADD ' || pg_get_constraintdef(k.oid)
            WHEN starts_with(d.def, d.head) THEN 'USING ' || substr(d.def, length(d.head) + 1) END AS tail
  FROM pg_index i
  JOIN pg_class x ON x.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')
 CROSS JOIN LATERAL (
       SELECT pg_get_indexdef(i.indexrelid) AS def,
              format('CREATE %sINDEX %I ON ONLY %I.%I USING ', CASE WHEN i.indisunique THEN 'UNIQUE ' END,
                     x.relname, n.nspname, t.relname) AS head) d
 WHERE i.indrelid = $1::regclass
 ORDER BY k.contype IS DISTINCT FROM 'p', NOT i.indisunique, x.relname"""
"""The parent's indexes, primary key first, then unique ones: a repeated key fails the first build.

pg_get_indexdef prints a partitioned index as `CREATE [UNIQUE] INDEX name ON ONLY schema.table USING
…`, names quoted as %I quotes them; what follows `USING` is the definition a partition's index repeats."""


async def child_indexes(conn: Connection, table: str) -> tuple[ChildIndex, ...] | None:
    """The DDL matching each of `table`'s indexes on a partition; None if one cannot be read so."""
    rows = await conn.fetch(_CHILD_INDEXES, quote_table(table))
    if any(r["tail"] is None for r in rows):
        return None
    return tuple(ChildIndex(r["verb"], r["tail"]) for r in rows)


async def _fold_signal_rollups(conn: Connection, partition: str) -> None:
    """What the rollup INSERT trigger (0093) folds for a statement inserting the partition's rows."""
    source = f"SELECT 1 AS sign, * FROM {partition}"
    for (statement,) in await conn.fetch("SELECT reporting.signal_fold_statements($1, false)", source):
        await conn.execute(statement)


REPRODUCERS: Mapping[str, Callable[[Connection, str], Awaitable[None]]] = {
    "reporting.signal_rollups_insert": _fold_signal_rollups,
}
"""INSERT trigger functions whose work this module redoes for a loaded partition, by name."""


@dataclass(frozen=True, slots=True)
class Standalone:
    """The month partition `begin_partition_load` created, not attached yet, and what to reproduce."""

    name: str
    """Unqualified: partitions live in their parent's schema."""
    reproduce: tuple[str, ...]
    """Trigger functions of the parent (REPRODUCERS keys) whose work `attach` must redo."""


def begin_sql(table: str, lo: str, hi: str) -> str:
    """The prelude's expression deciding and creating the standalone partition for rows in [lo, hi].

    `table`, `lo` and `hi` are parameter references; it yields (name, reproduce) or NULLs.
    """
    reproducible = "ARRAY[" + ", ".join(f"'{name}'" for name in REPRODUCERS) + "]::text[]"
    return f"signals.begin_partition_load({table}::text::regclass, {lo}, {hi}, {reproducible})"


def standalone(record: tuple[Any, ...] | None) -> Standalone | None:
    """What `begin_sql` yielded: the partition to load, or None (the regular path)."""
    if record is None or record[0] is None:
        return None
    return Standalone(record[0], tuple(record[1]))


async def attach(
    conn: Connection, table: str, partition: str, part: Standalone, lowest: datetime, indexes: Sequence[ChildIndex]
) -> None:
    """Index the loaded standalone `partition` (quoted, qualified) like `table`, attach it, reproduce triggers."""
    if indexes:
        # One round trip; the simple protocol stops at the first failing statement (the primary key's).
        await conn.execute(";\n".join(index.sql(partition) for index in indexes))
    await conn.execute("SELECT signals.finish_partition_load($1::text::regclass, $2)", quote_table(table), lowest)
    for trigger in part.reproduce:
        await REPRODUCERS[trigger](conn, partition)
