"""Writing a LowDB file the way lowdb does: 2-space JSON, same top-level keys, atomic replace.

lowdb (v1 and v7) serialises with `JSON.stringify(data, null, 2)`; orjson's OPT_INDENT_2 output
is byte-identical for the JSON types lowdb stores. lowdb@7 writes `.<name>.tmp` and renames it over
the file; we do the same (plus fsync), so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from syncd.tables import TableSpec, lowdb_record_from_row

# Documentation's allocation counters: the next integer id per collection.
COUNTERS: Mapping[str, str] = {
    "systems": "nextSystemId",
    "ideas": "nextId",
    "links": "nextLinkId",
    "files": "nextFileId",
}


def patch(document: dict[str, Any], spec: TableSpec, rows: Mapping[str, Mapping[str, Any]], deletes: set[str]) -> int:
    """Write PostgreSQL rows into one collection (in place, new ones appended), drop `deletes`.

    A record the file has keeps its keys and their order (`lowdb_record_from_row` with `like`);
    records touched are returned.
    """
    records = document.get(spec.collection)
    if not isinstance(records, list):
        records = document[spec.collection] = []
    position = {spec.record_key(r): i for i, r in enumerate(records)}
    for key, row in rows.items():
        at = position.get(key)
        if at is not None:
            old = records[at]
            records[at] = lowdb_record_from_row(spec, row, old if isinstance(old, dict) else None)
        else:
            position[key] = len(records)
            records.append(lowdb_record_from_row(spec, row))
    if deletes:
        records[:] = [r for r in records if spec.record_key(r) not in deletes]
    _bump_counter(document, spec)
    return len(rows) + len(deletes)


def _bump_counter(document: dict[str, Any], spec: TableSpec) -> None:
    # An app that allocates ids from the counter after a rollback must not reuse one PG handed out.
    counter = COUNTERS.get(spec.collection) if spec.int_ids else None
    if counter is None or not isinstance(document.get(counter), int):
        return
    ids = [int(k) for r in document[spec.collection] if (k := spec.record_key(r)) is not None and k.isdigit()]
    if ids:
        document[counter] = max(document[counter], max(ids) + 1)


def dumps(document: Mapping[str, Any]) -> bytes:
    """The document as lowdb writes it."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


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
