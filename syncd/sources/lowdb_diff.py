"""Reading a LowDB file safely and diffing it by id against what PostgreSQL holds.

Pure and synchronous: the LowDB source runs `read_file` and `diff` in a worker thread so a large
file never blocks the event loop.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

import orjson

from syncd.errors import InvalidRecord, UnreadableFile
from syncd.model import QuarantinedRecord, Row, TableChanges
from syncd.quarantine import Held
from syncd.tables import TableSpec, record_hash

Applied = dict[str, dict[str, bytes]]
"""Per collection: record key → row_hash of the version PostgreSQL holds."""


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One good read of the file: its identity, content hash and parsed document."""

    position: dict[str, Any]
    document: dict[str, Any]
    mtime: float


@dataclass(slots=True)
class TableDiff:
    """What changed in one collection."""

    spec: TableSpec
    upserts: list[Row] = field(default_factory=list)
    hashes: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    known: int = 0
    """Keys PostgreSQL held before this diff (base of the mass-delete ratio)."""

    def changes(self, *, with_deletes: bool = True) -> TableChanges:
        """The sink's view of this diff."""
        deletes = [self.spec.key_of(k) for k in self.deletes] if with_deletes else []
        return TableChanges(self.spec.table, self.spec.columns, self.spec.key, self.upserts, deletes)


@dataclass(slots=True)
class Diff:
    """A file version against PostgreSQL: per-table changes plus records to quarantine."""

    tables: list[TableDiff]
    quarantine: list[QuarantinedRecord] = field(default_factory=list)
    blocked: set[tuple[str, str]] = field(default_factory=set)
    """Keys this diff quarantined (blocked from now on)."""

    @property
    def empty(self) -> bool:
        """True when nothing would change in PostgreSQL."""
        return not self.quarantine and not any(t.upserts or t.deletes for t in self.tables)


def quarantine_table(spec: TableSpec) -> str:
    """The `table_name` a spec's quarantined records carry (documents: one per collection)."""
    return f"{spec.table}:{spec.collection}" if spec.document else spec.table


@contextmanager
def _no_gc() -> Iterator[None]:
    # A parsed document is acyclic; a collection triggered by its million young objects would
    # traverse them for nothing and double the read time of a large file.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_file(path: Path, collections: Sequence[str]) -> FileVersion:
    """Read and parse the file; UnreadableFile when empty, truncated, not JSON or not this layout."""
    with path.open("rb") as f:
        stat = os.fstat(f.fileno())
        data = f.read()
    if not data.strip():
        raise UnreadableFile(path, "empty")
    try:
        with _no_gc():
            document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UnreadableFile(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UnreadableFile(path, f"top level is {type(document).__name__}, not an object")
    # lowdb@1 writes `{}` before its defaults when it creates a file: a document with none of the
    # layout's collections is a transient state, never "every record deleted".
    if not any(c in document for c in collections):
        raise UnreadableFile(path, f"none of the collections {list(collections)} present")
    position = {
        "dev": stat.st_dev,
        "inode": stat.st_ino,
        "size": len(data),
        "mtime": stat.st_mtime,
        "sha": blake2b(data, digest_size=16).hexdigest(),
    }
    return FileVersion(position, document, stat.st_mtime)


def diff(version: FileVersion, specs: Sequence[TableSpec], applied: Applied, held: Held) -> Diff:
    """Compare every collection of `version` with `applied`, skipping keys `held` blocks."""
    result = Diff([])
    with _no_gc():
        for spec in specs:
            result.tables.append(_diff_table(spec, version.document.get(spec.collection, []), applied, held, result))
    return result


def _diff_table(spec: TableSpec, records: Any, applied: Applied, held: Held, result: Diff) -> TableDiff:
    table = quarantine_table(spec)
    old = applied.get(spec.collection, {})
    out = TableDiff(spec, known=len(old))
    if not isinstance(records, list):
        # Not a list: quarantine the whole value and change nothing, deletes included.
        _quarantine_keyless(result, held, table, records, f"collection {spec.collection!r} is not a list")
        return out
    by_key, duplicates = _group(spec, records, held, table, result)
    blocked = held.keys | result.blocked
    for key, record in by_key.items():
        if (table, key) in blocked:
            continue
        digest = record_hash(record)
        if old.get(key) == digest:
            continue
        try:
            out.upserts.append(spec.to_row(record, digest))
        except InvalidRecord as exc:
            _quarantine(result, table, key, record, exc.reason)
            continue
        out.hashes[key] = digest
    for key, versions in duplicates.items():
        if (table, key) not in blocked:
            for record in versions:
                _quarantine(result, table, key, record, f"duplicate id {key!r}: {len(versions)} records carry it")
    gone = old.keys() - by_key.keys() - duplicates.keys()
    out.deletes = sorted(k for k in gone if (table, k) not in blocked)
    return out


def _group(
    spec: TableSpec, records: list[Any], held: Held, table: str, result: Diff
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Records by key; keyless ones are quarantined, duplicated keys set apart (never guessed)."""
    by_key: dict[str, Any] = {}
    duplicates: dict[str, list[Any]] = {}
    for record in records:
        key = spec.record_key(record)
        if key is None:
            _quarantine_keyless(result, held, table, record, f"record has no usable {spec.key_field!r}")
        elif key in duplicates:
            duplicates[key].append(record)
        elif key in by_key:
            duplicates[key] = [by_key.pop(key), record]
        else:
            by_key[key] = record
    return by_key, duplicates


def _quarantine(result: Diff, table: str, key: str, record: Any, reason: str) -> None:
    result.quarantine.append(QuarantinedRecord(table, key, record, reason))
    result.blocked.add((table, key))


def _quarantine_keyless(result: Diff, held: Held, table: str, record: Any, reason: str) -> None:
    # Without a key nothing can be blocked: the record is quarantined once, recognised by its hash.
    if (table, record_hash(record)) not in held.keyless:
        result.quarantine.append(QuarantinedRecord(table, None, record, reason))


def apply_to(applied: Applied, tables: Sequence[TableDiff], *, with_deletes: bool) -> None:
    """Advance `applied` past a committed diff."""
    for t in tables:
        known = applied.setdefault(t.spec.collection, {})
        known.update(t.hashes)
        if with_deletes:
            for key in t.deletes:
                known.pop(key, None)


def mass_deletes(tables: Sequence[TableDiff], ratio: float, minimum: int) -> Mapping[str, int]:
    """Tables whose deletes exceed both `ratio` of their rows and `minimum` rows."""
    return {
        t.spec.table: len(t.deletes) for t in tables if len(t.deletes) > minimum and len(t.deletes) > ratio * t.known
    }
