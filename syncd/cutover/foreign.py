"""Foreign writes to a `pg-primary` file: a stale writer is detected, held, and overwritten.

In `pg-primary` only the reverse path may write the file. A LowDB-strategy process left running
keeps its in-memory copy and rewrites the whole file on its next write, silently erasing what the
reverse path put there (upstream-workspace-api.md §2). `FileMark` remembers the file as the reverse
path last left it (identity, size, mtime and SHA-256); every pass compares a `stat` with it, and a
file that changed (or, at the start of the path, any difference from PostgreSQL beyond the outbox's
backlog) is compared with PostgreSQL record by record. Each differing record as the foreign writer
left it is kept in `syncd.quarantine` (never applied over PostgreSQL's newer state, never dropped
silently), and the reverse path writes PostgreSQL's state for those keys back into the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from syncd import metrics
from syncd.cutover.lowdb_file import record_key
from syncd.cutover.verify import file_digests, pg_digests
from syncd.database import Connection
from syncd.lowdb.diff import FileVersion, content_hash
from syncd.poison import storable
from syncd.quarantine import accepted
from syncd.sink.postgres import ORIGIN
from syncd.tables import TableSpec

log = structlog.get_logger(__name__)

REASON = "written to the file by another writer during pg-primary; PostgreSQL's state was restored in the file"


@dataclass(frozen=True, slots=True)
class FileMark:
    """The file as the reverse path last left it."""

    inode: int
    size: int
    mtime_ns: int
    sha: str

    @classmethod
    def of(cls, data: bytes, stat: os.stat_result) -> FileMark:
        """The mark of `data`, read from (or just written to) the file whose stat is `stat`."""
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns, content_hash(data))

    def unchanged(self, path: Path) -> bool:
        """True while the file's stat is the one marked (a `stat`, no read)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return (st.st_ino, st.st_size, st.st_mtime_ns) == (self.inode, self.size, self.mtime_ns)


async def differing(
    conn: Connection, stream: str, specs: Sequence[TableSpec], version: FileVersion, since: int
) -> dict[str, set[str]]:
    """Per table, keys whose record in the file differs from PostgreSQL's row (or exists on one side
    only; a version an operator accepted compares with its stated coercion), leaving out keys a
    service changed since the reverse path's position `since`: those are the backlog the reverse
    path writes, not a foreign change. They are read after the rows, so a change the rows already
    show is always among them."""
    found: dict[str, set[str]] = {}
    coercions = await accepted(conn, stream)
    for spec in specs:
        source, invalid = file_digests(spec, version.document.get(spec.collection, []), coercions)
        pg = await pg_digests(conn, spec)
        keys = {k for k in source.keys() | pg.keys() if source.get(k) != pg.get(k)}
        found[spec.table] = keys | {k for k in invalid if k in pg}
    backlog = await conn.fetch(
        """SELECT DISTINCT table_name, key FROM syncd.outbox
            WHERE table_name = ANY($1::text[]) AND txid >= $2 AND origin <> $3""",
        list(found),
        since,
        ORIGIN,
    )
    for row in backlog:
        found[row["table_name"]].discard(row["key"])
    return found


async def hold(
    conn: Connection, stream: str, specs: Sequence[TableSpec], version: FileVersion, keys: Mapping[str, set[str]]
) -> int:
    """Quarantine the foreign version of each key (a record, a poison record's text, or its absence);
    records held."""
    rows = []
    for spec in specs:
        wanted = keys.get(spec.table, set())
        if not wanted:
            continue
        records = version.document.get(spec.collection, [])
        in_file = {record_key(spec, r): r for r in records if isinstance(records, list)}
        for key in sorted(wanted):
            raw: Any = in_file.get(key, {"foreign_delete": key})
            rows.append(("lowdb", stream, spec.table, key, storable(raw), REASON, version.position))
    await conn.executemany(
        """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, position)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        rows,
    )
    return len(rows)


def report(stream: str, path: Path, keys: Mapping[str, set[str]]) -> None:
    """The metric and the one log line of a foreign write (the alert SyncdForeignWrite follows it)."""
    metrics.FOREIGN_WRITES.labels(stream).inc()
    held = sorted(f"{table}:{key}" for table, ks in keys.items() for key in ks)
    log.error(
        "lowdb file written by another writer during pg-primary; PostgreSQL's state restored, "
        "its records held in quarantine",
        path=str(path),
        records=len(held),
        keys=held[:20],
    )
