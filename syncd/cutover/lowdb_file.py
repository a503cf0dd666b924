"""Writing a LowDB file the way lowdb does: 2-space JSON, same top-level keys, atomic replace.

lowdb (v1 and v7) serialises with `JSON.stringify(data, null, 2)`; orjson's OPT_INDENT_2 output
is byte-identical for the JSON types lowdb stores. lowdb@7 writes `.<name>.tmp` and renames it over
the file; we do the same (plus fsync), so a reader never sees a half-written file.

A file orjson refuses whole because of a poison record (`syncd.poison`) is read per record, as the
forward path reads it (`syncd.lowdb.slices`, `syncd.lowdb.records`): each poison record stands in
its collection as an `Untouched`, written back as the very bytes the file holds, so one record
Node reads but orjson cannot never stops PostgreSQL's changes to the others reaching the file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from syncd.errors import UnreadableFile
from syncd.lowdb.diff import FileVersion, parse_version, position, read_bytes
from syncd.lowdb.records import Records
from syncd.lowdb.slices import FIRST, LAST, slice_file
from syncd.poison import Poison, unwritable
from syncd.tables import TableSpec, lowdb_record_from_row

# Documentation's allocation counters: the next integer id per collection.
COUNTERS: Mapping[str, str] = {
    "systems": "nextSystemId",
    "ideas": "nextId",
    "links": "nextLinkId",
    "files": "nextFileId",
}
_NONCE = secrets.token_hex(16)
"""Makes the placeholders `dumps` swaps for untouched records unguessable to a file's writer."""


@dataclass(frozen=True, slots=True)
class Untouched(Poison):
    """A poison record of a file read per record, with the bytes the file holds for it."""

    data: bytes = b""
    """The record from its `{` to its `}`, as written at its place in the file."""
    at: str = ""
    """Where it is: `collection[index]`."""


def read_document(path: Path, specs: Sequence[TableSpec], *, whole: bool = True) -> FileVersion:
    """The file read and parsed (`parse_document`)."""
    return parse_document(path, *read_bytes(path), specs, whole=whole)


def parse_document(
    path: Path, data: bytes, stat: os.stat_result, specs: Sequence[TableSpec], *, whole: bool = True
) -> FileVersion:
    """`data` parsed whole (unless not `whole`) or, when orjson refuses it, per record.

    Per record, each record orjson cannot read or cannot write back is an `Untouched`. Either way
    every collection of the document is a list (a whole read's `records` stays empty). Raises
    UnreadableFile when Node could not read the file either (or it is not lowdb's layout).
    """
    collections = [s.collection for s in specs]
    try:
        if whole:
            return parse_version(path, data, stat, collections)
    except UnreadableFile:
        pass
    sliced = slice_file(data, collections)
    if sliced is None:
        return parse_version(path, data, stat, collections)
    by_collection = {s.collection: s for s in specs}
    document: dict[str, Any] = {}
    for key in sliced.order:
        if key not in sliced.bodies:
            document[key] = sliced.document[key]
            continue
        records = Records.from_body(by_collection[key], data, *sliced.bodies[key], None)
        if records is None:
            # A record Node could not read either: the file is unreadable, as the whole parse said.
            return parse_version(path, data, stat, collections)
        document[key] = [_untouched(records, key, i) for i in range(len(records))]
    return FileVersion(position(data, stat), document, stat.st_mtime)


def _untouched(records: Records, collection: str, i: int) -> Any:
    record, piece = records.record(i), records.piece(i)
    poison = record if isinstance(record, Poison) else unwritable(piece, record, records.keys[i])
    if poison is None:
        return record
    return Untouched(poison.reason, poison.text, poison.key, FIRST[-1:] + piece + LAST, f"{collection}[{i}]")


def untouched(document: Mapping[str, Any], specs: Sequence[TableSpec]) -> list[tuple[TableSpec, Untouched]]:
    """The poison records of a document `read_document` returned, with their collection's spec."""
    return [
        (spec, r)
        for spec in specs
        if isinstance(records := document.get(spec.collection), list)
        for r in records
        if isinstance(r, Untouched)
    ]


def record_key(spec: TableSpec, record: Any) -> str | None:
    """A record's id, a poison record's included."""
    return record.key if isinstance(record, Poison) else spec.record_key(record)


def patch(document: dict[str, Any], spec: TableSpec, rows: Mapping[str, Mapping[str, Any]], deletes: set[str]) -> int:
    """Write PostgreSQL rows into one collection (in place, new ones appended), drop `deletes`.

    A record the file has keeps its keys and their order (`lowdb_record_from_row` with `like`);
    a poison record PostgreSQL changed is replaced by PostgreSQL's row (PostgreSQL is the truth in
    `pg-primary`; the poison is quarantined by the caller). Records touched are returned.
    """
    records = document.get(spec.collection)
    if not isinstance(records, list):
        records = document[spec.collection] = []
    position = {record_key(spec, r): i for i, r in enumerate(records)}
    for key, row in rows.items():
        at = position.get(key)
        if at is not None:
            old = records[at]
            records[at] = lowdb_record_from_row(spec, row, old if isinstance(old, dict) else None)
        else:
            position[key] = len(records)
            records.append(lowdb_record_from_row(spec, row))
    if deletes:
        records[:] = [r for r in records if record_key(spec, r) not in deletes]
    _bump_counter(document, spec)
    return len(rows) + len(deletes)


def _bump_counter(document: dict[str, Any], spec: TableSpec) -> None:
    # An app that allocates ids from the counter after a rollback must not reuse one PG handed out.
    counter = COUNTERS.get(spec.collection) if spec.int_ids else None
    if counter is None or not isinstance(document.get(counter), int):
        return
    ids = [int(k) for r in document[spec.collection] if (k := record_key(spec, r)) is not None and k.isdigit()]
    if ids:
        document[counter] = max(document[counter], max(ids) + 1)


def dumps(document: Mapping[str, Any]) -> bytes:
    """The document as lowdb writes it; an `Untouched` record as the bytes the file held for it."""
    kept: list[bytes] = []

    def placeholder(value: Any) -> str:
        if not isinstance(value, Untouched):
            raise TypeError(f"{type(value).__name__} is not JSON")
        kept.append(value.data)
        return f"syncd-untouched:{_NONCE}:{len(kept) - 1}"

    data = orjson.dumps(document, default=placeholder, option=orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATACLASS)
    for i, raw in enumerate(kept):
        # The placeholder sits where the record sat, at the same indentation: its bytes fit as they are.
        data = data.replace(orjson.dumps(f"syncd-untouched:{_NONCE}:{i}"), raw, 1)
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` via a synced temp file in the same directory (owner and mode kept)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if st is None else st.st_mode & 0o7777)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if st is not None and os.geteuid() == 0:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fsync(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
