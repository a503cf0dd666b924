"""Apply a Batch to PostgreSQL in ONE transaction: rows, deletes, quarantine, checkpoint, fencing.

Upserts are deduplicated by key (last wins), then either COPied straight into the table when none
of their keys can exist yet (first load), or COPied into a temporary stage and merged set-based:
rows whose `row_hash` is unchanged are filtered out by an anti-join before `INSERT … ON CONFLICT`,
so re-applying an unchanged batch writes nothing and fires no trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from syncd.errors import BatchRejected, Fenced, SinkUnavailable
from syncd.model import ApplyResult, Batch, Checkpoint, Row, TableChanges

log = structlog.get_logger(__name__)

ORIGIN = "syncd"

# SQLSTATE classes, never message text (messages are localizable). One table, unit-tested.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_TRANSIENT_CODES = frozenset({"55P03"})  # lock_not_available
_FENCED = "SY001"


def classify(exc: BaseException, *, stream: str, table: str = "-") -> Exception:
    """Map a driver exception to SinkUnavailable (retry), Fenced, or BatchRejected (do not retry)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        if code == _FENCED:
            return Fenced(-1, str(exc))
        if code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES:
            return SinkUnavailable(f"{stream}: PostgreSQL [{code}] {exc}", defer=0.5)
        detail = getattr(exc, "detail", None) or str(exc)
        return BatchRejected(stream, table, code, detail)
    if isinstance(exc, asyncpg.InterfaceError | OSError | asyncio.TimeoutError | ConnectionError):
        return SinkUnavailable(f"{stream}: connection lost: {exc!r}", defer=0.5)
    raise exc


@dataclass(frozen=True, slots=True)
class _TableInfo:
    """Catalog facts the merge needs, read once per table."""

    types: Mapping[str, str]
    partitioned: bool


class PostgresSink:
    """Applies batches for one leader epoch; a stale epoch's transaction aborts with Fenced."""

    def __init__(self, pool: asyncpg.Pool, epoch: int) -> None:
        self._pool = pool
        self.epoch = epoch
        self._info: dict[str, _TableInfo] = {}

    async def apply(self, batch: Batch) -> dict[str, ApplyResult]:
        """Commit every change of `batch` and its checkpoint atomically; return what each table saw."""
        stream = batch.checkpoint.stream
        table = "-"
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL syncd.origin = 'syncd'")
                await conn.execute("SELECT syncd.fence($1)", self.epoch)
                results = {c.table: ApplyResult() for c in batch.tables}
                for changes in batch.tables:
                    table = changes.table
                    results[table] += await self._upsert(conn, changes)
                for changes in reversed(batch.tables):
                    table = changes.table
                    results[table] += await self._delete(conn, changes)
                table = "syncd.quarantine"
                await _quarantine(conn, batch)
                table = "syncd.checkpoints"
                await _save_checkpoint(conn, batch.checkpoint, self.epoch)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
            error = classify(exc, stream=stream, table=table)
            if isinstance(error, Fenced):
                raise Fenced(self.epoch, str(exc)) from exc
            raise error from exc
        return results

    async def load_checkpoint(self, source: str, stream: str) -> Mapping[str, Any] | None:
        """The committed position of a stream, or None before its first batch."""
        position: Mapping[str, Any] | None = await self._pool.fetchval(
            "SELECT position FROM syncd.checkpoints WHERE source = $1 AND stream = $2", source, stream
        )
        return position

    async def _table_info(self, conn: asyncpg.Connection, table: str) -> _TableInfo:
        if table not in self._info:
            rows = await conn.fetch(
                """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
                          c.relkind = 'p' AS partitioned
                     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                    WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
                table,
            )
            self._info[table] = _TableInfo(
                types={r["attname"]: r["type"] for r in rows},
                partitioned=bool(rows and rows[0]["partitioned"]),
            )
        return self._info[table]

    async def _upsert(self, conn: asyncpg.Connection, changes: TableChanges) -> ApplyResult:
        rows = dedupe(changes.upserts, [changes.columns.index(k) for k in changes.key])
        if not rows:
            return ApplyResult()
        info = await self._table_info(conn, changes.table)
        if info.partitioned:
            await _ensure_partitions(conn, changes, rows)
        if not await _any_key_exists(conn, changes, rows):
            copied = await _copy_direct(conn, changes, rows)
            if copied is not None:
                return ApplyResult(inserted=copied)
        return await _merge(conn, changes, rows)

    async def _delete(self, conn: asyncpg.Connection, changes: TableChanges) -> ApplyResult:
        if not changes.deletes:
            return ApplyResult()
        info = await self._table_info(conn, changes.table)
        keys = list(changes.key)
        arrays = ", ".join(f"${i + 1}::{info.types[k]}[]" for i, k in enumerate(keys))
        match = " AND ".join(f"t.{_ident(k)} = d.{_ident(k)}" for k in keys)
        columns = ", ".join(_ident(k) for k in keys)
        status = await conn.execute(
            f"DELETE FROM {changes.table} t USING unnest({arrays}) AS d({columns}) WHERE {match}",
            *[[row[i] for row in changes.deletes] for i in range(len(keys))],
        )
        return ApplyResult(deleted=_count(status))


def dedupe(rows: Sequence[Row], key_positions: Sequence[int]) -> list[Row]:
    """Keep the last row per key, in first-seen key order (ON CONFLICT cannot touch a row twice)."""
    if len(key_positions) == 1:
        (pos,) = key_positions
        return list({row[pos]: row for row in rows}.values())
    return list({tuple(row[p] for p in key_positions): row for row in rows}.values())


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _ensure_partitions(conn: asyncpg.Connection, changes: TableChanges, rows: list[Row]) -> None:
    # The partition key is the leading key column (signals: ts).
    pos = changes.columns.index(changes.key[0])
    values = [row[pos] for row in rows]
    await conn.execute(
        "SELECT signals.ensure_partitions($1::regclass, $2, $3)", changes.table, min(values), max(values)
    )


async def _any_key_exists(conn: asyncpg.Connection, changes: TableChanges, rows: list[Row]) -> bool:
    """Cheap test on the leading key column's range; the unique index stays the real guard."""
    pos = changes.columns.index(changes.key[0])
    values = [row[pos] for row in rows]
    column = _ident(changes.key[0])
    exists: bool = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {changes.table} WHERE {column} BETWEEN $1 AND $2)",
        min(values),
        max(values),
    )
    return exists


async def _copy_direct(conn: asyncpg.Connection, changes: TableChanges, rows: list[Row]) -> int | None:
    """COPY into the table itself; None (rolled back) if a key existed after all."""
    schema, name = _split(changes.table)
    try:
        async with conn.transaction():
            status = await conn.copy_records_to_table(
                name, schema_name=schema, columns=list(changes.columns), records=rows
            )
    except asyncpg.UniqueViolationError:
        return None
    return _count(status)


async def _merge(conn: asyncpg.Connection, changes: TableChanges, rows: list[Row]) -> ApplyResult:
    stage = await _stage(conn, changes)
    await conn.copy_records_to_table(stage, columns=list(changes.columns), records=rows)
    cols = ", ".join(_ident(c) for c in changes.columns)
    key = ", ".join(_ident(k) for k in changes.key)
    same_key = " AND ".join(f"t.{_ident(k)} = s.{_ident(k)}" for k in changes.key)
    updates = ", ".join(
        f"{_ident(c)} = excluded.{_ident(c)}" for c in changes.columns if c not in changes.key
    )
    row = await conn.fetchrow(
        f"""WITH merged AS (
                INSERT INTO {changes.table} AS t ({cols})
                SELECT {cols} FROM {stage} s
                 WHERE NOT EXISTS (SELECT 1 FROM {changes.table} t
                                    WHERE {same_key} AND t.row_hash = s.row_hash)
                ON CONFLICT ({key}) DO UPDATE SET {updates}, synced_at = now()
                 WHERE t.row_hash IS DISTINCT FROM excluded.row_hash
                RETURNING xmax = 0 AS inserted)
            SELECT count(*) FILTER (WHERE inserted) AS inserted,
                   count(*) FILTER (WHERE NOT inserted) AS updated
              FROM merged"""
    )
    assert row is not None
    inserted, updated = int(row["inserted"]), int(row["updated"])
    return ApplyResult(inserted=inserted, updated=updated, unchanged=len(rows) - inserted - updated)


async def _stage(conn: asyncpg.Connection, changes: TableChanges) -> str:
    """A session temp table shaped like the target's columns, emptied at every commit."""
    stage = "stage_" + changes.table.replace(".", "__")
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {stage}
              (LIKE {changes.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
    )
    return stage


async def _quarantine(conn: asyncpg.Connection, batch: Batch) -> None:
    if not batch.quarantine:
        return
    cp = batch.checkpoint
    await conn.executemany(
        """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, position)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(cp.source, cp.stream, q.table, q.key, q.raw, q.reason, cp.position) for q in batch.quarantine],
    )


async def _save_checkpoint(conn: asyncpg.Connection, checkpoint: Checkpoint, epoch: int) -> None:
    await conn.execute(
        """INSERT INTO syncd.checkpoints (source, stream, position, epoch)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (source, stream)
           DO UPDATE SET position = excluded.position, epoch = excluded.epoch, updated_at = now()""",
        checkpoint.source,
        checkpoint.stream,
        checkpoint.position,
        epoch,
    )

