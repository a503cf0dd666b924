"""Apply a Batch to PostgreSQL in ONE transaction: rows, deletes, quarantine, checkpoint, fencing.

Upserts are deduplicated by key (last wins), then either COPied straight into the table when none
of their keys can exist yet (first load), or merged set-based: keys and hashes are COPied into a
narrow temp stage first, joined against the table, and only new or changed rows travel in full to a
second stage and through `INSERT … ON CONFLICT DO UPDATE`. Re-applying an unchanged batch therefore
writes nothing, locks nothing and fires no trigger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from syncd.database import Connection
from syncd.errors import BatchRejected, Fenced, ModeChanged, SinkUnavailable
from syncd.model import ApplyResult, Batch, Checkpoint, Row, TableChanges

log = structlog.get_logger(__name__)

ORIGIN = "syncd"

# SQLSTATE classes, never message text (messages are localizable). One table, unit-tested.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_TRANSIENT_CODES = frozenset({"55P03"})  # lock_not_available
_FENCED = "SY001"
_NOT_MIRRORING = "SY002"


def classify(exc: BaseException, *, stream: str, table: str = "-") -> Exception:
    """Map a driver exception to SinkUnavailable (retry), Fenced, or BatchRejected (do not retry)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        if code == _FENCED:
            return Fenced(-1, str(exc))
        if code == _NOT_MIRRORING:
            return ModeChanged(stream, str(exc))
        if code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES:
            return SinkUnavailable(f"{stream}: PostgreSQL [{code}] {exc}", defer=0.5)
        detail = getattr(exc, "detail", None) or str(exc)
        return BatchRejected(stream, table, code, detail)
    if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
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
                # Key probes sort a batch's keys: keep that in memory rather than spill to disk.
                await conn.execute("SET LOCAL syncd.origin = 'syncd'; SET LOCAL work_mem = '64MB'")
                await conn.execute("SELECT syncd.fence($1)", self.epoch)
                if batch.mirror_of is not None:
                    await conn.execute("SELECT syncd.require_mirror($1)", batch.mirror_of)
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
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
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

    async def _table_info(self, conn: Connection, table: str) -> _TableInfo:
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

    async def _upsert(self, conn: Connection, changes: TableChanges) -> ApplyResult:
        rows = dedupe(changes.upserts, [changes.columns.index(k) for k in changes.key])
        if not rows:
            return ApplyResult()
        info = await self._table_info(conn, changes.table)
        if info.partitioned:
            await _ensure_partitions(conn, changes, rows)
        fresh, known = await _split_fresh(conn, changes, rows)
        if fresh:
            copied = await _copy_direct(conn, changes, fresh)
            if copied is None:  # the range probe was wrong (text collation): let the merge sort it out
                return await _merge(conn, changes, rows)
            return ApplyResult(inserted=copied) + await _merge(conn, changes, known)
        return await _merge(conn, changes, known)

    async def _delete(self, conn: Connection, changes: TableChanges) -> ApplyResult:
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


async def _ensure_partitions(conn: Connection, changes: TableChanges, rows: list[Row]) -> None:
    # The partition key is the leading key column (signals: ts).
    pos = changes.columns.index(changes.key[0])
    values = [row[pos] for row in rows]
    await conn.execute(
        "SELECT signals.ensure_partitions($1::regclass, $2, $3)", changes.table, min(values), max(values)
    )


async def _split_fresh(conn: Connection, changes: TableChanges, rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Split off rows whose leading key lies above every stored key in the batch's range.

    Those cannot exist yet and go straight in by COPY (the first-load and append path); the rest
    need the key probe. The primary key stays the real guard should the probe be wrong.
    """
    pos = changes.columns.index(changes.key[0])
    values = [row[pos] for row in rows]
    column = _ident(changes.key[0])
    highest = await conn.fetchval(
        f"SELECT max({column}) FROM {changes.table} WHERE {column} BETWEEN $1 AND $2", min(values), max(values)
    )
    if highest is None:
        return rows, []
    fresh = [row for row in rows if row[pos] > highest]
    known = [row for row in rows if not row[pos] > highest]
    return fresh, known


async def _copy_direct(conn: Connection, changes: TableChanges, rows: list[Row]) -> int | None:
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


async def _merge(conn: Connection, changes: TableChanges, rows: list[Row]) -> ApplyResult:
    """Send keys and hashes first; only new or changed rows travel in full and reach INSERT."""
    if not rows:
        return ApplyResult()
    existed = await _changed_keys(conn, changes, rows)
    if not existed:
        return ApplyResult(unchanged=len(rows))
    key_of = _key_getter(changes)
    changed = [row for row in rows if key_of(row) in existed]
    if not any(existed.values()):
        copied = await _copy_direct(conn, changes, changed)
        if copied is not None:
            return ApplyResult(inserted=copied, unchanged=len(rows) - copied)
    stage = await _stage(
        conn,
        "stage_rows_" + changes.table.replace(".", "__"),
        f"(LIKE {changes.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    await conn.copy_records_to_table(stage, columns=list(changes.columns), records=changed)
    cols = ", ".join(_ident(c) for c in changes.columns)
    updates = ", ".join(f"{_ident(c)} = excluded.{_ident(c)}" for c in changes.columns if c not in changes.key)
    await conn.execute(
        f"""INSERT INTO {changes.table} AS t ({cols}) SELECT {cols} FROM {stage}
            ON CONFLICT ({", ".join(_ident(k) for k in changes.key)})
            DO UPDATE SET {updates}, synced_at = now()
            WHERE t.row_hash IS DISTINCT FROM excluded.row_hash"""
    )
    updated = sum(existed.values())
    inserted = len(changed) - updated
    return ApplyResult(inserted=inserted, updated=updated, unchanged=len(rows) - len(changed))


async def _changed_keys(conn: Connection, changes: TableChanges, rows: list[Row]) -> dict[Row, bool]:
    """Keys whose row is new or differs from PostgreSQL's `row_hash`, mapped to whether it existed."""
    narrow = [*changes.key, "row_hash"]
    names = ", ".join(_ident(c) for c in narrow)
    stage = await _stage(
        conn,
        "stage_keys_" + changes.table.replace(".", "__"),
        f"ON COMMIT DELETE ROWS AS SELECT {names} FROM {changes.table} WITH NO DATA",
    )
    positions = [changes.columns.index(c) for c in narrow]
    await conn.copy_records_to_table(stage, columns=narrow, records=[tuple(row[p] for p in positions) for row in rows])
    same_key = " AND ".join(f"t.{_ident(k)} = s.{_ident(k)}" for k in changes.key)
    selected = ", ".join(f"s.{_ident(k)}" for k in changes.key)
    lead = _ident(changes.key[0])
    # Bounding the table side by the stage's own key range (computed by PostgreSQL, so collation
    # agrees) turns a whole-table scan per batch into an index range scan and prunes partitions.
    found = await conn.fetch(
        f"""SELECT {selected}, t.row_hash IS NOT NULL AS existed
              FROM {stage} s LEFT JOIN {changes.table} t
                ON {same_key}
               AND t.{lead} BETWEEN (SELECT min({lead}) FROM {stage}) AND (SELECT max({lead}) FROM {stage})
             WHERE t.row_hash IS DISTINCT FROM s.row_hash"""
    )
    width = len(changes.key)
    return {tuple(r[:width]): bool(r[width]) for r in found}


def _key_getter(changes: TableChanges) -> Callable[[Row], Row]:
    positions = [changes.columns.index(k) for k in changes.key]
    return lambda row: tuple(row[p] for p in positions)


async def _stage(conn: Connection, name: str, definition: str) -> str:
    """A session temp table, created once per connection and emptied at every commit."""
    await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} {definition}")
    return name


async def _quarantine(conn: Connection, batch: Batch) -> None:
    if not batch.quarantine:
        return
    cp = batch.checkpoint
    await conn.executemany(
        """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, position)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(cp.source, cp.stream, q.table, q.key, q.raw, q.reason, cp.position) for q in batch.quarantine],
    )


async def _save_checkpoint(conn: Connection, checkpoint: Checkpoint, epoch: int) -> None:
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
