"""Apply a Batch to PostgreSQL in ONE transaction: rows, deletes, quarantine, checkpoint, fencing.

Upserts are either COPied straight into the table when none of their keys can exist yet (first
load, appends), or merged set-based: keys and hashes are COPied into a narrow temp stage first,
joined against the table, and only new or changed rows travel in full to a second stage and through
`INSERT … ON CONFLICT DO UPDATE`. Re-applying an unchanged batch therefore writes nothing, locks
nothing and fires no trigger. Only the merge deduplicates by key (last wins, ON CONFLICT cannot touch
a row twice): the straight COPY leaves that to the primary key, and a batch whose keys repeat fails
it, which retries the batch through the merge.

A batch whose rows of a partitioned table all fall in ONE month that has no partition yet (a first
load, a backfill of history) goes faster than COPY into a live partition can: the prelude creates
the month as a standalone table, the rows are COPied into it with no index to maintain and no
trigger to fire, the parent's indexes are built on it (primary key first: a repeated key fails
there and the batch is retried through the merge, as after the straight COPY) and it is attached,
adopting them; what the parent's INSERT triggers would have done is then done over the new
partition (`syncd/sink/partitions.py`, `signals.begin_partition_load` in 0100). The decision is
taken under the parent's SHARE UPDATE EXCLUSIVE lock (ATTACH's own; readers and writers of other
partitions go on): a second writer of that month waits, then finds the partition. A table with a
trigger the sink does not reproduce (capture triggers), a batch spanning two months, a month whose
partition exists, and the merge's retry take the regular path.

Round trips are what a batch pays beside its rows, so the per-batch statements are one: the
session settings, the fence, the mirror check, each table's partitions and its key-range probe go
to PostgreSQL as a single `SELECT` (`_prelude`). A small batch (an edit: no key probe, no
partitions) is ONE prepared statement outside any explicit transaction (`_apply_at_once`): its
settings, fence, mirror check, checkpoint, upserts, deletes and quarantine rows are the CTEs of one
statement, whose implicit transaction commits at the protocol's Sync, so an edit costs one round
trip and its plan is asyncpg's cached one. Per-row work stays in C (`map`, `itemgetter`,
`compress`, `dict(zip(...))`): no Python loop over a batch's rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from hashlib import blake2b
from itertools import compress
from operator import itemgetter, not_
from typing import Any

import asyncpg
import orjson
import structlog
from asyncpg.exceptions import _base as asyncpg_base

from syncd.database import PG_ERRORS, Connection, borrowed, is_transient
from syncd.errors import BatchRejected, Fenced, ModeChanged, SinkUnavailable
from syncd.identifiers import quote_ident, quote_table, split_table
from syncd.model import ApplyResult, Batch, Checkpoint, LoadProgress, Row, TableChanges
from syncd.sink import partitions
from syncd.sink.culprits import about_rows, culprits

log = structlog.get_logger(__name__)

ORIGIN = "syncd"

_FENCED = "SY001"
_NOT_MIRRORING = "SY002"
_CLIENT_DATA = "22000"
"""Reported for a value asyncpg's codecs refused before it reached the server (data exception class)."""


def classify(exc: BaseException, *, stream: str, table: str = "-") -> Exception:
    """Map a driver exception to SinkUnavailable (retry), Fenced, ModeChanged or BatchRejected."""
    code = (exc.sqlstate or "") if isinstance(exc, asyncpg.PostgresError) else ""
    if code == _FENCED:
        return Fenced(-1, str(exc))
    if code == _NOT_MIRRORING:
        return ModeChanged(stream, str(exc))
    if is_transient(exc):
        return SinkUnavailable(f"{stream}: PostgreSQL unavailable: {exc!r}", defer=0.5)
    if isinstance(exc, asyncpg.PostgresError):
        return BatchRejected(stream, table, code, getattr(exc, "detail", None) or str(exc))
    if isinstance(exc, asyncpg_base.DataError):
        return BatchRejected(stream, table, _CLIENT_DATA, str(exc))
    raise exc


@dataclass(frozen=True, slots=True)
class _TableInfo:
    """Catalog facts the merge needs, read once per table."""

    types: Mapping[str, str]
    partitioned: bool
    child_indexes: tuple[partitions.ChildIndex, ...] | None = None
    """A partitioned table's indexes as a partition repeats them (None: not loadable standalone)."""

    def loads_standalone(self, lead: str) -> bool:
        """Whether a new month of this table can be loaded as a standalone partition (monthly on `lead`)."""
        return self.child_indexes is not None and self.types[lead] == "timestamp with time zone"

    def ordered_like_python(self, column: str) -> bool:
        """Whether PostgreSQL orders `column` exactly as Python orders its decoded values.

        True for numbers and times; text follows a collation Python does not know.
        """
        kind = self.types[column]
        return kind.startswith(_PYTHON_ORDERED)


_STAGING: ContextVar[LoadProgress | None] = ContextVar("staging", default=None)
"""The counters of the first load being applied (Batch.progress), for the COPYs deep in the merge:
a context variable rather than a parameter of every function between `apply` and them."""

SMALL_BATCH = 100
"""Up to this many rows a table's upserts go as one JSON statement (fewer round trips than stages)."""

_PYTHON_ORDERED = ("timestamp", "date", "bigint", "integer", "smallint", "numeric", "double precision", "real")


@dataclass(frozen=True, slots=True)
class _Upserts:
    """One table's upserts and their leading key's range, computed before the transaction."""

    changes: TableChanges
    rows: Sequence[Row]
    """As the batch brought them (keys may repeat) for the straight COPY, deduplicated for the merge."""
    leads: list[Any]
    """The leading key column of each row (signals: ts), in row order."""
    deduplicated: bool

    def merged(self) -> _Upserts:
        """These upserts with one row per key (the last), as the merge needs them."""
        if self.deduplicated:
            return self
        return _upserts(self.changes, dedupe(self.rows, _key_positions(self.changes)), deduplicated=True)


class PostgresSink:
    """Applies batches for one fencing epoch; a stale epoch's transaction aborts with Fenced.

    With `lease` the epoch is that stream's lease (syncd.stream_leases, per-stream ownership);
    without, it is the single leader row (syncd.leader), as one-shot writers such as backfill use.
    """

    def __init__(
        self, pool: asyncpg.Pool, epoch: int, *, lease: str | None = None, acquire_timeout: float = 10.0
    ) -> None:
        self._pool = pool
        self.epoch = epoch
        self.lease = lease
        self.acquire_timeout = acquire_timeout
        self._info: dict[str, _TableInfo] = {}

    async def apply(self, batch: Batch) -> dict[str, ApplyResult]:
        """Commit every change of `batch` and its checkpoint atomically; return what each table saw.

        A first load's `batch.progress.staged` follows the rows its COPYs take, per attempt."""
        token = _STAGING.set(batch.progress)
        try:
            return await self._apply_batch(batch)
        finally:
            _STAGING.reset(token)

    async def _apply_batch(self, batch: Batch) -> dict[str, ApplyResult]:
        upserts = [_upserts(c, c.upserts, deduplicated=len(c.upserts) <= SMALL_BATCH) for c in batch.tables]
        try:
            return await self._apply(batch, upserts, fast=True)
        except _FastPathMissed:
            # A key repeated in the batch, or appeared between the probe and the COPY (another
            # writer): merge this batch once, deduplicated.
            return await self._apply(batch, [u.merged() for u in upserts], fast=False)

    async def _apply(
        self, batch: Batch, upserts: list[_Upserts], *, fast: bool, at_once: bool = True
    ) -> dict[str, ApplyResult]:
        stream = batch.checkpoint.stream
        table = "-"
        one_statement = False
        if batch.progress is not None:
            batch.progress.staged = 0  # an attempt stages afresh (a retry, the merge after a missed fast path)
        try:
            async with borrowed(self._pool, self.acquire_timeout) as conn:
                infos = [await self._table_info(conn, u.changes.table) for u in upserts]
                if at_once and _fits_one_statement(batch, upserts, infos):
                    one_statement = True
                    return await self._apply_at_once(conn, batch, upserts, infos)
                async with conn.transaction():
                    found = await self._prelude(conn, batch, upserts, infos, standalone=fast)
                    results = {c.table: ApplyResult() for c in batch.tables}
                    for u, info, probe in zip(upserts, infos, found, strict=True):
                        table = u.changes.table
                        results[table] += await _upsert(conn, u, info, probe, fast=fast)
                    for changes, info in zip(reversed(batch.tables), reversed(infos), strict=True):
                        table = changes.table
                        results[table] += await _delete(conn, changes, info)
                    table = "syncd.quarantine"
                    await _quarantine(conn, batch)
        except PG_ERRORS as exc:
            error = classify(exc, stream=stream, table=table)
            if isinstance(error, Fenced):
                raise Fenced(self.epoch, str(exc)) from exc
            if one_statement and isinstance(error, BatchRejected):
                # One statement cannot say which of its tables refused a row; a statement per table can
                # (it rolls back too), and its rejection is then classified and bisected as ever.
                return await self._apply(batch, upserts, fast=False, at_once=False)
            if fast and isinstance(exc, asyncpg.UniqueViolationError):
                raise _FastPathMissed from exc
            raise await self._with_culprits(batch, error) from exc
        return results

    async def _with_culprits(self, batch: Batch, error: Exception) -> Exception:
        """A rejection naming the rows refused on their own, when it is about a table's rows."""
        if not isinstance(error, BatchRejected) or not about_rows(error.sqlstate):
            return error
        changes = next((c for c in batch.tables if c.table == error.table and c.upserts), None)
        if changes is None:
            return error
        try:
            rows = await culprits(self._pool, changes, self._probe)
        except PG_ERRORS as exc:
            log.warning("could not bisect a rejected batch", table=error.table, error=repr(exc))
            return error
        if rows:
            log.warning("rows refused by PostgreSQL found", table=error.table, rows=len(rows))
        return BatchRejected(error.stream, error.table, error.sqlstate, error.detail, tuple(rows))

    async def _probe(self, conn: Connection, changes: TableChanges) -> None:
        """The upserts of `changes` alone, as `apply` runs them (through the merge)."""
        u = _upserts(changes, changes.upserts, deduplicated=False).merged()
        info = await self._table_info(conn, changes.table)
        batch = Batch(Checkpoint("", "", {}), [changes])
        [probe] = await self._prelude(conn, batch, [u], [info], save_checkpoint=False)
        await _upsert(conn, u, info, probe, fast=False)

    async def _apply_at_once(
        self, conn: Connection, batch: Batch, upserts: Sequence[_Upserts], infos: Sequence[_TableInfo]
    ) -> dict[str, ApplyResult]:
        """The whole batch as ONE statement in its own implicit transaction (see `_fits_one_statement`).

        Every write of the batch is a data-modifying CTE; each one's rows come joined to `guard`
        (settings, fence, mirror check), so no row reaches a table, or its BEFORE triggers, before
        `syncd.origin` is set and the fence has passed; the capture triggers fire at the end of the
        statement, after all of it. Any error aborts the statement, and with it every write and the
        checkpoint. The statement's text depends only on which tables and parts the batch has, so
        asyncpg's statement cache keeps its plan across edits.
        """
        ref = _Parameters()
        epoch = f"{ref(self.epoch)}::bigint"
        cp = batch.checkpoint
        ctes = [
            f"guard AS MATERIALIZED (SELECT {', '.join(self._guards(batch, ref, epoch))})",
            f"""checkpoint AS (
                INSERT INTO syncd.checkpoints (source, stream, position, epoch)
                SELECT {ref(cp.source)}::text, {ref(cp.stream)}::text, {ref(cp.position)}::jsonb, {epoch} FROM guard
                ON CONFLICT (source, stream)
                DO UPDATE SET position = excluded.position, epoch = excluded.epoch, updated_at = now())""",
        ]
        counts = ["true"]
        for i, (u, info) in enumerate(zip(upserts, infos, strict=True)):
            if u.rows:
                ctes.append(_upsert_ctes(u.changes, ref(_document(u.changes, u.rows)), f"u{i}", gate="guard"))
                counts += [f"{_inserted(u.changes, f'u{i}')} AS u{i}_inserted", f"(SELECT count(*) FROM u{i}) AS u{i}"]
            if u.changes.deletes:
                ctes.append(f"d{i} AS ({_delete_sql(u.changes, info, ref, gate='guard')} RETURNING 1)")
                counts.append(f"(SELECT count(*) FROM d{i}) AS d{i}")
        if batch.quarantine:
            ctes.append(f"quarantine AS ({_quarantine_sql(batch, ref, gate='guard')})")
        row = await conn.fetchrow(f"WITH {', '.join(ctes)} SELECT {', '.join(counts)}", *ref.values)
        assert row is not None
        results = {c.table: ApplyResult() for c in batch.tables}
        for i, u in enumerate(upserts):
            if u.rows:
                results[u.changes.table] += _counted(len(u.rows), row[f"u{i}_inserted"], row[f"u{i}"])
            if u.changes.deletes:
                results[u.changes.table] += ApplyResult(deleted=row[f"d{i}"])
        return results

    def _guards(self, batch: Batch, ref: _Parameters, epoch: str) -> list[str]:
        """What every batch runs before its rows: its settings, the fence, the mirror check."""
        # Key probes and merges sort a batch's keys: keep that in memory rather than spill to disk.
        parts = [f"set_config('syncd.origin', {ref(ORIGIN)}, true)", "set_config('work_mem', '64MB', true)"]
        if self.lease is None:
            parts.append(f"syncd.fence({epoch})")
        else:
            parts.append(f"syncd.fence_stream({ref(self.lease)}, {epoch})")
        if batch.mirror_of is not None:
            parts.append(f"syncd.require_mirror({ref(batch.mirror_of)})")
        return parts

    async def _prelude(
        self,
        conn: Connection,
        batch: Batch,
        upserts: Sequence[_Upserts],
        infos: Sequence[_TableInfo],
        *,
        save_checkpoint: bool = True,
        standalone: bool = False,
    ) -> list[_Probe]:
        """One statement: settings, fence, mirror check, partitions, per-table key probes, checkpoint.

        Returns, per table, the highest stored leading key inside the batch's range (None if none)
        and, with `standalone`, the month partition created standalone for the table's rows to load.
        """
        ref = _Parameters()
        epoch = f"{ref(self.epoch)}::bigint"
        parts = self._guards(batch, ref, epoch)
        probes: list[tuple[int | None, int | None]] = []
        for u, info in zip(upserts, infos, strict=True):
            probes.append((None, None))
            if not _probed(u, info):
                continue
            lo, hi = ref(min(u.leads)), ref(max(u.leads))
            table, lead = quote_table(u.changes.table), quote_ident(u.changes.key[0])
            loads = None
            # The partition key is the leading key column (signals: ts).
            if standalone and len(u.rows) > SMALL_BATCH and info.loads_standalone(u.changes.key[0]):
                loads = len(parts)
                parts.append(partitions.begin_sql(ref(table), lo, hi))
            elif info.partitioned:
                parts.append(f"signals.ensure_partitions({ref(table)}::text::regclass, {lo}, {hi})")
            if len(u.rows) > SMALL_BATCH:
                probes[-1] = (len(parts), loads)
                parts.append(f"(SELECT max({lead}) FROM {table} WHERE {lead} BETWEEN {lo} AND {hi})")
        checkpoint = ""
        if save_checkpoint:
            cp = batch.checkpoint
            values = ", ".join((ref(cp.source), ref(cp.stream), ref(cp.position), epoch))
            # The checkpoint rides along: the transaction commits it with the rows or not at all.
            checkpoint = f"""WITH checkpoint AS (
                INSERT INTO syncd.checkpoints (source, stream, position, epoch) VALUES ({values})
                ON CONFLICT (source, stream)
                DO UPDATE SET position = excluded.position, epoch = excluded.epoch, updated_at = now() RETURNING 1)"""
            parts.append("(SELECT count(*) FROM checkpoint)")
        columns = ", ".join(f"{p} AS p{i}" for i, p in enumerate(parts))
        row = await conn.fetchrow(f"{checkpoint} SELECT {columns}", *ref.values)
        assert row is not None
        return [
            _Probe(None if i is None else row[i], None if j is None else partitions.standalone(row[j]))
            for i, j in probes
        ]

    async def load_checkpoint(self, source: str, stream: str) -> Mapping[str, Any] | None:
        """The committed position of a stream, or None before its first batch (SinkUnavailable: retry)."""
        try:
            async with borrowed(self._pool, self.acquire_timeout) as conn:
                position: Mapping[str, Any] | None = await conn.fetchval(
                    "SELECT position FROM syncd.checkpoints WHERE source = $1 AND stream = $2", source, stream
                )
        except PG_ERRORS as exc:
            raise classify(exc, stream=stream, table="syncd.checkpoints") from exc
        return position

    async def _table_info(self, conn: Connection, table: str) -> _TableInfo:
        if table not in self._info:
            rows = await conn.fetch(
                """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
                          c.relkind = 'p' AS partitioned
                     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                    WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
                quote_table(table),
            )
            partitioned = bool(rows and rows[0]["partitioned"])
            self._info[table] = _TableInfo(
                types={r["attname"]: r["type"] for r in rows},
                partitioned=partitioned,
                child_indexes=await partitions.child_indexes(conn, table) if partitioned else None,
            )
        return self._info[table]


@dataclass(frozen=True, slots=True)
class _Probe:
    """What the prelude found for one table's upserts."""

    highest: Any
    """The highest stored leading key inside the batch's range (None if none)."""
    standalone: partitions.Standalone | None = None
    """The month partition created standalone for these rows, to load and attach."""


def _probed(u: _Upserts, info: _TableInfo) -> bool:
    """Whether the prelude needs this table's key range: to make partitions, or to probe a big batch."""
    return bool(u.rows) and (info.partitioned or len(u.rows) > SMALL_BATCH)


def _fits_one_statement(batch: Batch, upserts: Sequence[_Upserts], infos: Sequence[_TableInfo]) -> bool:
    """Whether `_apply_at_once` can take the batch: no table needs a key probe or partitions.

    Nor may a table be written twice: one row written twice in one statement has no defined outcome
    (a key both upserted and deleted), and a table's changes by two parts of one statement reach its
    capture triggers as one transition table, where a statement per part applies them in order.
    """
    if any(_probed(u, info) for u, info in zip(upserts, infos, strict=True)):
        return False
    written = [c.table for c in batch.tables if c.upserts or c.deletes]
    if len(set(written)) < len(written):
        return False
    return all(set(u.changes.deletes).isdisjoint(_key_tuples(u)) for u in upserts if u.changes.deletes and u.rows)


def _key_tuples(u: _Upserts) -> Iterable[tuple[Any, ...]]:
    """The upserts' keys as tuples in `key` order, the shape of `TableChanges.deletes`."""
    return zip(*(map(itemgetter(i), u.rows) for i in _key_positions(u.changes)), strict=True)


class _Parameters:
    """The values of one statement being written: each value added is spelled `$n` in its text."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class _FastPathMissed(Exception):
    """The direct COPY met an existing key: the batch is retried through the merge."""


def dedupe(rows: Sequence[Row], key_positions: Sequence[int]) -> Sequence[Row]:
    """Keep the last row per key, in first-seen key order (ON CONFLICT cannot touch a row twice).

    `rows` itself comes back when no key repeats (the usual case): no copy.
    """
    if not rows:
        return rows
    last = dict(zip(map(itemgetter(*key_positions), rows), rows, strict=True))
    return rows if len(last) == len(rows) else list(last.values())


def _key_positions(changes: TableChanges) -> list[int]:
    return [changes.columns.index(k) for k in changes.key]


def _upserts(changes: TableChanges, rows: Sequence[Row], *, deduplicated: bool) -> _Upserts:
    if deduplicated:
        rows = dedupe(rows, _key_positions(changes))
    leads = list(map(itemgetter(changes.columns.index(changes.key[0])), rows))
    return _Upserts(changes, rows, leads, deduplicated)


async def _upsert(conn: Connection, u: _Upserts, info: _TableInfo, probe: _Probe, *, fast: bool) -> ApplyResult:
    """Rows above the highest stored key go in by COPY, the rest through the merge.

    Rows filling a month that had no partition go into it before it is attached (`partitions`).
    """
    if not u.rows:
        return ApplyResult()
    if len(u.rows) <= SMALL_BATCH:
        _staged_at_once(u.rows)
        return await _upsert_small(conn, u.changes, u.rows)
    if not fast:
        return await _merge(conn, u.changes, u.rows)
    if probe.standalone is not None:
        return await _load_standalone(conn, u, info, probe.standalone)
    fresh, known = _split_fresh(u, probe.highest)
    if not fresh:
        return await _merge(conn, u.changes, u.merged().rows)
    # A probe over text is only a guess (collations): guard its COPY with a savepoint. Over times
    # and numbers it is exact unless another writer commits meanwhile, which aborts the whole batch
    # and `apply` retries it through the merge; so does a key repeated in the batch.
    guarded = not info.ordered_like_python(u.changes.key[0])
    copied = await _copy_direct(conn, u.changes, fresh, guarded=guarded)
    if copied is None:
        return await _merge(conn, u.changes, u.merged().rows)
    if not known:
        return ApplyResult(inserted=copied)
    # The few rows at the probed key itself (ties of a non-unique leading key across two batches)
    # go as one statement rather than through the stages.
    known = dedupe(known, _key_positions(u.changes))
    small = len(known) <= SMALL_BATCH
    rest = await (_upsert_small(conn, u.changes, known) if small else _merge(conn, u.changes, known))
    return ApplyResult(inserted=copied) + rest


async def _load_standalone(conn: Connection, u: _Upserts, info: _TableInfo, part: partitions.Standalone) -> ApplyResult:
    """The rows into the month partition the prelude created standalone, then attached (`partitions`).

    Keys may repeat (the batch as it came): the primary key's build then fails, and `apply` retries the
    batch through the merge, as after a straight COPY.
    """
    assert info.child_indexes is not None  # the prelude asked only where `loads_standalone`
    schema, _ = _split(u.changes.table)
    columns = list(u.changes.columns)
    status = await conn.copy_records_to_table(part.name, schema_name=schema, columns=columns, records=_fed(u.rows))
    partition = f"{quote_ident(schema)}.{quote_ident(part.name)}"
    await partitions.attach(conn, u.changes.table, partition, part, min(u.leads), info.child_indexes)
    return ApplyResult(inserted=_count(status))


def _columns(changes: TableChanges) -> str:
    return ", ".join(quote_ident(c) for c in changes.columns)


def _updates(changes: TableChanges) -> str:
    """The SET list of an upsert: every non-key column from `excluded`."""
    return ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in changes.columns if c not in changes.key)


def _split(table: str) -> tuple[str, str]:
    schema, name = split_table(table)
    return schema or "public", name


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _upsert_small(conn: Connection, changes: TableChanges, rows: Sequence[Row]) -> ApplyResult:
    """A few deduplicated rows (an edit): one statement carrying them as JSON, instead of stages and COPYs."""
    row = await conn.fetchrow(
        f"WITH {_upsert_ctes(changes, '$1', 'upserted')} SELECT {_inserted(changes, 'upserted')} AS inserted,"
        " (SELECT count(*) FROM upserted) AS touched",
        _document(changes, rows),
    )
    assert row is not None
    return _counted(len(rows), row["inserted"], row["touched"])


def _upsert_ctes(changes: TableChanges, document: str, name: str, *, gate: str | None = None) -> str:
    """CTEs upserting the rows of the JSON `document` (a text parameter): `{name}_rows`, `{name}_existed`, `{name}`.

    `{name}` returns the keys it inserted or changed. With `gate`, each row comes joined to that
    one-row CTE, so the gate has been evaluated before any row reaches the table.
    """
    table, cols, updates = quote_table(changes.table), _columns(changes), _updates(changes)
    keys = ", ".join(quote_ident(k) for k in changes.key)
    row_keys = ", ".join(f"r.{quote_ident(k)}" for k in changes.key)
    same_key = " AND ".join(f"t.{quote_ident(k)} = r.{quote_ident(k)}" for k in changes.key)
    source = f"jsonb_populate_recordset(NULL::{table}, {document}::text::jsonb) AS r"
    # Every part of one statement sees the table as it was before it: `existed` tells updates apart.
    # A lateral LIMIT looks each key up in the primary key index: a semi join would be planned (for
    # the generic plan's guess of 100 rows) as a hash over the whole table, a scan per edit.
    return f"""{name}_rows AS (SELECT r.* FROM {_gated(gate)}{source}),
        {name}_existed AS (
            SELECT {row_keys} FROM {name}_rows r, LATERAL (SELECT FROM {table} t WHERE {same_key} LIMIT 1) found),
        {name} AS (
            INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {name}_rows
            ON CONFLICT ({keys}) DO UPDATE SET {updates}, synced_at = now()
            WHERE t.row_hash IS DISTINCT FROM excluded.row_hash
            RETURNING {keys})"""


def _gated(gate: str | None) -> str:
    """The FROM-list entry joining each row to the one-row CTE `gate` (nothing without one)."""
    return f"{gate}, " if gate else ""


def _inserted(changes: TableChanges, name: str) -> str:
    """How many keys the upsert CTE `name` (`_upsert_ctes`) inserted rather than updated."""
    same_key = " AND ".join(f"e.{quote_ident(k)} = u.{quote_ident(k)}" for k in changes.key)
    return f"(SELECT count(*) FROM {name} u WHERE NOT EXISTS (SELECT FROM {name}_existed e WHERE {same_key}))"


def _document(changes: TableChanges, rows: Sequence[Row]) -> str:
    """`rows` as the JSON array of objects `jsonb_populate_recordset` reads."""
    return orjson.dumps([dict(zip(changes.columns, row, strict=True)) for row in rows], default=_json_value).decode()


def _counted(rows: int, inserted: int, touched: int) -> ApplyResult:
    """An upsert's result from the rows it was given, those it inserted and those it wrote at all."""
    return ApplyResult(inserted=inserted, updated=touched - inserted, unchanged=rows - touched)


def _json_value(value: Any) -> str:
    """JSON for what orjson leaves out: bytes as bytea's hex text, decimals as their digits."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _split_fresh(u: _Upserts, highest: Any) -> tuple[Sequence[Row], Sequence[Row]]:
    """Split off rows whose leading key lies above every stored key in the batch's range.

    Those cannot exist yet and go straight in by COPY (the first-load and append path); the rest
    need the key probe. The primary key stays the real guard should the probe be wrong.
    """
    if highest is None:
        return u.rows, []
    above = list(map(highest.__lt__, u.leads))
    if not any(above):  # a re-apply: no copies of the batch
        return [], u.rows
    return list(compress(u.rows, above)), list(compress(u.rows, map(not_, above)))


async def _copy_direct(
    conn: Connection, changes: TableChanges, rows: Sequence[Row], *, guarded: bool = True
) -> int | None:
    """COPY into the table itself; None (rolled back to a savepoint) if `guarded` and a key existed."""
    schema, name = _split(changes.table)
    columns = list(changes.columns)
    if not guarded:
        return _count(await conn.copy_records_to_table(name, schema_name=schema, columns=columns, records=_fed(rows)))
    try:
        async with conn.transaction():
            status = await conn.copy_records_to_table(name, schema_name=schema, columns=columns, records=_fed(rows))
    except asyncpg.UniqueViolationError:
        return None
    return _count(status)


def _fed(rows: Sequence[Row]) -> Iterable[Row]:
    """`rows` for a COPY of full rows, counted into the first load's `staged` when one is applied."""
    progress = _STAGING.get()
    return rows if progress is None else progress.feed(rows)


def _staged_at_once(rows: Sequence[Row]) -> None:
    """A first load's few rows going as one statement: all staged at once."""
    progress = _STAGING.get()
    if progress is not None:
        progress.staged += len(rows)


async def _merge(conn: Connection, changes: TableChanges, rows: Sequence[Row]) -> ApplyResult:
    """Send keys and hashes first; only new or changed rows travel in full and reach INSERT."""
    if not rows:
        return ApplyResult()
    keys_stage, rows_stage = await _stages(conn, changes)
    existed = await _changed_keys(conn, changes, rows, keys_stage)
    if not existed:
        return ApplyResult(unchanged=len(rows))
    key_of = _key_getter(changes)
    changed = list(compress(rows, map(existed.__contains__, map(key_of, rows))))
    if not any(existed.values()):
        copied = await _copy_direct(conn, changes, changed)
        if copied is not None:
            return ApplyResult(inserted=copied, unchanged=len(rows) - copied)
    await conn.copy_records_to_table(rows_stage, columns=list(changes.columns), records=_fed(changed))
    cols, updates = _columns(changes), _updates(changes)
    await conn.execute(
        f"""INSERT INTO {quote_table(changes.table)} AS t ({cols}) SELECT {cols} FROM {quote_ident(rows_stage)}
            ON CONFLICT ({", ".join(quote_ident(k) for k in changes.key)})
            DO UPDATE SET {updates}, synced_at = now()
            WHERE t.row_hash IS DISTINCT FROM excluded.row_hash"""
    )
    updated = sum(existed.values())
    inserted = len(changed) - updated
    return ApplyResult(inserted=inserted, updated=updated, unchanged=len(rows) - len(changed))


async def _changed_keys(conn: Connection, changes: TableChanges, rows: Sequence[Row], stage: str) -> dict[Any, bool]:
    """Keys whose row is new or differs from PostgreSQL's `row_hash`, mapped to whether it existed.

    A one-column key is the value itself, a wider one a tuple (what `_key_getter` gives).
    """
    narrow = [*changes.key, "row_hash"]
    narrow_of = itemgetter(*(changes.columns.index(c) for c in narrow))
    await conn.copy_records_to_table(stage, columns=narrow, records=list(map(narrow_of, rows)))
    same_key = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in changes.key)
    selected = ", ".join(f"s.{quote_ident(k)}" for k in changes.key)
    lead, staged = quote_ident(changes.key[0]), quote_ident(stage)
    # Bounding the table side by the stage's own key range (computed by PostgreSQL, so collation
    # agrees) turns a whole-table scan per batch into an index range scan and prunes partitions.
    found = await conn.fetch(
        f"""SELECT {selected}, t.row_hash IS NOT NULL AS existed
              FROM {staged} s LEFT JOIN {quote_table(changes.table)} t
                ON {same_key}
               AND t.{lead} BETWEEN (SELECT min({lead}) FROM {staged}) AND (SELECT max({lead}) FROM {staged})
             WHERE t.row_hash IS DISTINCT FROM s.row_hash"""
    )
    width = len(changes.key)
    if width == 1:
        return {r[0]: bool(r[1]) for r in found}
    return {tuple(r[:width]): bool(r[width]) for r in found}


def _key_getter(changes: TableChanges) -> Callable[[Row], Any]:
    """A row's key as `_changed_keys` spells it: the value for one column, else a tuple."""
    return itemgetter(*(changes.columns.index(k) for k in changes.key))


async def _stages(conn: Connection, changes: TableChanges) -> tuple[str, str]:
    """The table's two session temp tables (keys and hashes; whole rows), emptied at every commit.

    Created once per connection; IF NOT EXISTS makes that one round trip for both each time.
    """
    keys, rows = f"stage_keys_{_stage_suffix(changes.table)}", f"stage_rows_{_stage_suffix(changes.table)}"
    names = ", ".join(quote_ident(c) for c in (*changes.key, "row_hash"))
    table = quote_table(changes.table)
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {quote_ident(keys)} ON COMMIT DELETE ROWS
                AS SELECT {names} FROM {table} WITH NO DATA;
            CREATE TEMP TABLE IF NOT EXISTS {quote_ident(rows)} (LIKE {table} INCLUDING DEFAULTS)
                ON COMMIT DELETE ROWS"""
    )
    return keys, rows


def _stage_suffix(table: str) -> str:
    """A stage's name part for `table`: readable, and unique within PostgreSQL's 63 bytes."""
    readable = re.sub(r"[^a-z0-9_]", "_", table.lower().replace(".", "__"))[:32]
    return f"{readable}_{blake2b(table.encode(), digest_size=4).hexdigest()}"


async def _delete(conn: Connection, changes: TableChanges, info: _TableInfo) -> ApplyResult:
    if not changes.deletes:
        return ApplyResult()
    ref = _Parameters()
    status = await conn.execute(_delete_sql(changes, info, ref), *ref.values)
    return ApplyResult(deleted=_count(status))


def _delete_sql(changes: TableChanges, info: _TableInfo, ref: _Parameters, *, gate: str | None = None) -> str:
    """The DELETE of `changes.deletes`, its keys bound through `ref` as one array per key column.

    With `gate`, each key comes joined to that one-row CTE (see `_upsert_ctes`)."""
    keys = list(changes.key)
    arrays = ", ".join(
        f"{ref(list(map(itemgetter(i), changes.deletes)))}::{info.types[k]}[]" for i, k in enumerate(keys)
    )
    match = " AND ".join(f"t.{quote_ident(k)} = d.{quote_ident(k)}" for k in keys)
    columns = ", ".join(quote_ident(k) for k in keys)
    using = f"{_gated(gate)}unnest({arrays}) AS d({columns})"
    return f"DELETE FROM {quote_table(changes.table)} t USING {using} WHERE {match}"


async def _quarantine(conn: Connection, batch: Batch) -> None:
    if not batch.quarantine:
        return
    ref = _Parameters()
    await conn.execute(_quarantine_sql(batch, ref), *ref.values)


def _quarantine_sql(batch: Batch, ref: _Parameters, *, gate: str | None = None) -> str:
    """The INSERT of the batch's quarantined records, bound through `ref` as one jsonb document.

    With `gate`, each record comes joined to that one-row CTE (see `_upsert_ctes`)."""
    cp = batch.checkpoint
    records = ref(
        [
            {
                "table_name": q.table,
                "key": q.key,
                "raw": q.raw,
                "reason": q.reason,
                "position": cp.position if q.position is None else q.position,
            }
            for q in batch.quarantine
        ]
    )
    shape = "q(table_name text, key text, raw jsonb, reason text, position jsonb)"
    return f"""INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, position)
        SELECT {ref(cp.source)}::text, {ref(cp.stream)}::text, q.table_name, q.key, q.raw, q.reason, q.position
          FROM {_gated(gate)}jsonb_to_recordset({records}::jsonb) AS {shape}"""
