"""Parity with PostgreSQL: a LowDB file (counts, a hash per key bucket, keys), QuestDB signals per day.

Both sides are compared in column space: each file record goes through its table spec (the same
mapping the sink applies) and each PostgreSQL row is read as stored, so a timestamp written as
`…:00Z` and stored as `…:00.000+00:00` is equal, while any value that differs is a mismatch.
Bookkeeping columns (`row_hash`) are not content, nor is a raw value in `extra` that its column
no longer holds (the reverse path never writes it back: `TableSpec.content`). A record the spec
rejects is a mismatch too: PostgreSQL cannot hold it, so the two sides are not equal, unless an
operator accepted that version with a stated coercion (`syncd quarantine accept`), which both the
stream and this check apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any

import orjson

from syncd import metrics
from syncd.config import LowdbSettings, QuestdbSettings
from syncd.database import Connection
from syncd.errors import InvalidRecord
from syncd.identifiers import quote_ident, quote_table
from syncd.lowdb.diff import FileVersion, quarantine_table
from syncd.lowdb.reader import read_version
from syncd.lowdb.records import Records
from syncd.poison import Poison
from syncd.quarantine import Coercions, accepted, stated_for
from syncd.questdb.reconcile import DayParity, Reconciler
from syncd.questdb.source import SignalsSource
from syncd.questdb.sql import day_bounds
from syncd.tables import TableSpec, record_hash, specs_for

BUCKETS = 64
"""Key buckets per table: a mismatch report names the buckets, then their differing keys."""
LIST_LIMIT = 20
"""Keys listed per kind of mismatch (the counts are always complete)."""

Digests = dict[str, bytes]
DUPLICATE = " (duplicate)"
"""Suffix of an invalid key that occurs more than once in the file."""


@dataclass(frozen=True, slots=True)
class TableParity:
    """One table: row counts, bucket hashes compared, and the keys that differ (bounded lists)."""

    table: str
    source_rows: int
    pg_rows: int
    differing_buckets: tuple[int, ...] = ()
    missing_in_pg: tuple[str, ...] = ()
    missing_in_source: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    mismatched_rows: int = 0

    @property
    def clean(self) -> bool:
        """True when both sides hold the same rows with the same content."""
        return self.mismatched_rows == 0


@dataclass(frozen=True, slots=True)
class FileParity:
    """A LowDB file against PostgreSQL, table by table."""

    name: str
    path: Path
    tables: tuple[TableParity, ...]
    sha: str
    notes: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """True when every table is clean."""
        return all(t.clean for t in self.tables)

    @property
    def mismatched_rows(self) -> int:
        """Rows that differ over all tables."""
        return sum(t.mismatched_rows for t in self.tables)


def content_digest(values: Sequence[Any]) -> bytes:
    """blake2b-128 of a row's content columns in canonical JSON (timestamps in UTC)."""
    canonical = [v.astimezone(UTC) if isinstance(v, datetime) else v for v in values]
    return blake2b(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def bucket_of(key: str) -> int:
    """The bucket a key falls in, stable across processes."""
    return int.from_bytes(blake2b(key.encode(), digest_size=2).digest(), "big") % BUCKETS


def bucket_hashes(digests: Mapping[str, bytes]) -> list[int]:
    """Per bucket, the XOR of `key + digest` hashes: independent of row order."""
    buckets = [0] * BUCKETS
    for key, digest in digests.items():
        buckets[bucket_of(key)] ^= int.from_bytes(blake2b(key.encode() + digest, digest_size=16).digest(), "big")
    return buckets


def file_digests(spec: TableSpec, records: Any, accepted: Coercions | None = None) -> tuple[Digests, list[str]]:
    """Content digests of a collection's valid records by key, and the keys the spec rejects.

    `records` is the parsed list, or the per-record read's `Records` (whose poison is invalid too).
    A record version an operator accepted (`accepted`) is mapped with its stated coercion, as the
    stream writes it."""
    if isinstance(records, Records):
        records = [records.record(i) for i in range(len(records))]
    digests: Digests = {}
    invalid: list[str] = []
    table = quarantine_table(spec)
    for record in records if isinstance(records, list) else []:
        if isinstance(record, Poison):
            invalid.append(record.key or "<no id>")
            continue
        key = spec.record_key(record)
        stated = None
        if accepted and (table, key) in accepted:
            stated = stated_for(accepted, table, key, record_hash(record))
        try:
            row = spec.to_row(record, b"", stated)
        except InvalidRecord:
            invalid.append(key or "<no id>")
            continue
        if key in digests:
            invalid.append(f"{key}{DUPLICATE}")
        digests[str(key)] = content_digest(spec.content(row[:-1]))
    return digests, invalid


async def pg_digests(conn: Connection, spec: TableSpec) -> Digests:
    """Content digests of the table's rows by key, streamed through a cursor."""
    # A cursor needs a transaction; inside a caller's (promote holds the cutover row) reuse it.
    if conn.is_in_transaction():
        return await _stream_digests(conn, spec)
    async with conn.transaction(readonly=True):
        return await _stream_digests(conn, spec)


async def _stream_digests(conn: Connection, spec: TableSpec) -> Digests:
    columns = ", ".join(quote_ident(c) for c in spec.columns if c != "row_hash")
    where, args = ("WHERE collection = $1", [spec.collection]) if spec.document else ("", [])
    key_at = spec.columns.index("id")
    digests: Digests = {}
    async for row in conn.cursor(f"SELECT {columns} FROM {quote_table(spec.table)} {where}", *args, prefetch=2000):
        values = tuple(row)
        digests[values[key_at]] = content_digest(spec.content(values))
    return digests


def compare(table: str, source: Digests, pg: Digests, invalid: Sequence[str]) -> TableParity:
    """Bucket hashes first; keys of differing buckets only.

    A key the file holds invalid is listed once, as invalid (`!`): PostgreSQL may still have its
    last valid version, which is not also "missing in the file" or "different".
    """
    ours, theirs = bucket_hashes(source), bucket_hashes(pg)
    differing_buckets = tuple(b for b in range(BUCKETS) if ours[b] != theirs[b])
    suspects = set(differing_buckets)
    held = {k.removesuffix(DUPLICATE) for k in invalid}
    keys = {k for k in source.keys() | pg.keys() if bucket_of(k) in suspects} - held
    missing_pg = sorted(k for k in keys if k not in pg)
    missing_src = sorted(k for k in keys if k not in source)
    differing = sorted(k for k in keys if k in pg and k in source and pg[k] != source[k])
    bad = sorted(invalid)
    return TableParity(
        table,
        len(source) + len(bad),
        len(pg),
        differing_buckets,
        tuple(missing_pg[:LIST_LIMIT]),
        tuple(missing_src[:LIST_LIMIT]),
        tuple(differing[:LIST_LIMIT]),
        tuple(bad[:LIST_LIMIT]),
        len(missing_pg) + len(missing_src) + len(differing) + len(bad),
    )


async def verify_file(conn: Connection, settings: LowdbSettings, version: FileVersion | None = None) -> FileParity:
    """Compare the file (its current version unless given) with PostgreSQL, table by table."""
    specs = specs_for(settings)
    if version is None:
        version = await asyncio.to_thread(read_version, settings.path, specs)
    coercions = await accepted(conn, settings.name)
    tables = []
    for spec in specs:
        source, invalid = await asyncio.to_thread(file_digests, spec, version.collection(spec), coercions)
        label = f"{spec.table}:{spec.collection}" if spec.document else spec.table
        tables.append(compare(label, source, await pg_digests(conn, spec), invalid))
    return FileParity(settings.name, settings.path, tuple(tables), version.position["sha"])


async def verify_signals(settings: QuestdbSettings, dsn: str, days: int, now: datetime) -> list[DayParity]:
    """QuestDB against PostgreSQL per day, over the last `days` days up to `now` minus the safety lag.

    Rows held in quarantine (PostgreSQL refused QuestDB's version) are named per day, not compared:
    the stream's quarantine state is read first, as each poll of the stream reads it."""
    source = SignalsSource(settings, pg_dsn=dsn)
    reconciler = Reconciler(source, dsn)
    top = now - timedelta(seconds=settings.safety_lag)
    first = top.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    try:
        await source.refusals.refresh(None)
        out = []
        for offset in range(days):
            lo, hi = day_bounds(first + timedelta(days=offset))
            out.append(await reconciler.compare(lo, min(hi - timedelta(microseconds=1), top), content=True))
        return out
    finally:
        await reconciler.close()
        await source.close()


def record_metrics(parities: Iterable[FileParity]) -> None:
    """Publish mismatching rows per table (syncd_verify_mismatch_rows)."""
    for parity in parities:
        for table in parity.tables:
            metrics.VERIFY_MISMATCH_ROWS.labels(table.table).set(table.mismatched_rows)
