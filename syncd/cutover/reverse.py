"""The reverse path of a `pg-primary` file: PostgreSQL changes written back into the LowDB file.

The outbox says which keys changed (syncd's own origin skipped); their CURRENT rows are read and
patched into the file, which is rewritten atomically in lowdb's format, then the outbox position
is acknowledged in the same transaction. A crash between the file write and the commit re-applies
the same state on restart: idempotent. The forward stream of the file is stopped in this mode, so
the watcher never re-applies these writes; after a rollback the forward diff finds them equal.

A poison record in the file (one Node reads but orjson or PostgreSQL cannot, `syncd.poison`) is
quarantined with its reason, as the forward path does, and written back as the bytes the file
holds (`lowdb_file.read_document`); the other records keep receiving PostgreSQL's changes. When
PostgreSQL has a row (or a delete) for the poison record's very key, PostgreSQL's state is written:
in `pg-primary` PostgreSQL is the truth, and the poison's text stays in quarantine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog
from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from syncd import metrics, outbox, quarantine
from syncd.config import LowdbSettings
from syncd.cutover import foreign as foreign_writes
from syncd.cutover.foreign import FileMark
from syncd.cutover.lowdb_file import Untouched, dumps, parse_document, patch, read_document, untouched, write_atomic
from syncd.cutover.state import PG_PRIMARY, reverse_consumer
from syncd.database import PG_ERRORS, Connection, borrowed
from syncd.errors import ModeChanged, UnreadableFile
from syncd.identifiers import quote_table
from syncd.lowdb.diff import FileVersion, quarantine_table, read_bytes
from syncd.stream import StreamState
from syncd.tables import TableSpec, record_hash, specs_for

log = structlog.get_logger(__name__)

Row = dict[str, Any]
"""A PostgreSQL row as column → value."""

POLL_SECONDS = 0.2
TRANSIENT = (UnreadableFile, *PG_ERRORS)
ACQUIRE_TIMEOUT = 10.0


def lock_key(name: str) -> int:
    """The advisory lock serialising reverse writes of one file (daemon and `rollback`)."""
    return int.from_bytes(blake2b(f"syncd-reverse:{name}".encode(), digest_size=8).digest(), "big", signed=True)


@dataclass(slots=True)
class Guard:
    """What one running reverse path knows of its file between passes (see `syncd.cutover.foreign`)."""

    mark: FileMark | None = None
    """The file as the last pass left it; None until the first pass (which compares the whole file)."""


async def flush(conn: Connection, settings: LowdbSettings, guard: Guard | None = None) -> int:
    """One pass: outbox → current rows → file → ack, under the file's lock; records written.

    With a `guard` (the daemon's reverse path), a file some other writer changed since the last
    pass is compared with PostgreSQL: the foreign records are held in quarantine and PostgreSQL's
    state for their keys is written back in the same pass.
    """
    specs = specs_for(settings)
    consumer = reverse_consumer(settings.name)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(settings.name))
        try:
            read = await outbox.read(conn, consumer)
        except LookupError:
            raise ModeChanged(settings.name, "the reverse path was ended (rollback or retire)") from None
        version, seen, foreign = await _foreign(conn, settings, specs, guard, read.acked, writing=not read.empty)
        if any(foreign.values()):
            assert version is not None
            # Before the rewrite patches the version: what is held is what the foreign writer wrote.
            await foreign_writes.hold(conn, settings.name, specs, version, foreign)
        written, mark = 0, None
        poison = untouched(version.document, specs) if version is not None else []
        if not read.empty or any(foreign.values()):
            keys = {s.table: read.keys.get(s.table, set()) | foreign.get(s.table, set()) for s in specs}
            changes = {s.collection: await _current(conn, s, keys[s.table]) for s in specs}
            written, mark, version, poison = await asyncio.to_thread(_rewrite, settings, specs, changes, version)
        if poison:
            assert version is not None
            await _hold_poison(conn, settings, poison, version.position, foreign)
        if read.upto > read.acked:
            await outbox.ack(conn, consumer, read.upto)
    if guard is not None:
        if any(foreign.values()):
            foreign_writes.report(settings.name, settings.path, foreign)
        guard.mark = mark or seen or guard.mark
    return written


async def _foreign(
    conn: Connection,
    settings: LowdbSettings,
    specs: Sequence[TableSpec],
    guard: Guard | None,
    since: int,
    *,
    writing: bool,
) -> tuple[FileVersion | None, FileMark | None, dict[str, set[str]]]:
    """The file's version, its mark and its foreign keys, read when the guard sees the file changed
    or this pass will rewrite it (the version checked is the version patched)."""
    if guard is None or (guard.mark is not None and not writing and guard.mark.unchanged(settings.path)):
        return None, None, {}
    version, seen = await asyncio.to_thread(_read_marked, settings.path, specs)
    if guard.mark is not None and seen.sha == guard.mark.sha:
        return version, seen, {}
    return version, seen, await foreign_writes.differing(conn, settings.name, specs, version, since)


def _read_marked(path: Path, specs: Sequence[TableSpec]) -> tuple[FileVersion, FileMark]:
    data, stat = read_bytes(path)
    version = parse_document(path, data, stat, specs)
    return version, FileMark(stat.st_ino, stat.st_size, stat.st_mtime_ns, version.position["sha"])


async def _current(conn: Connection, spec: TableSpec, keys: set[str]) -> tuple[dict[str, Row], set[str]]:
    """The current rows of changed `keys` and the keys now gone."""
    if not keys:
        return {}, set()
    rows = await conn.fetch(f"SELECT * FROM {quote_table(spec.table)} WHERE id = ANY($1::text[])", sorted(keys))
    current = {r["id"]: dict(r) for r in rows}
    return current, keys - current.keys()


def _rewrite(
    settings: LowdbSettings,
    specs: Sequence[TableSpec],
    changes: Mapping[str, tuple[dict[str, Row], set[str]]],
    version: FileVersion | None,
) -> tuple[int, FileMark, FileVersion, list[tuple[TableSpec, Untouched]]]:
    """PostgreSQL's changes patched into the file; records written, the new mark, the version
    patched and its poison records (as read, before the patch)."""
    if version is None:
        version = read_document(settings.path, specs)
    poison = untouched(version.document, specs)
    written = _patch(version, specs, changes)
    try:
        data = dumps(version.document)
    except orjson.JSONEncodeError:
        # A record nested too deep for orjson to write parses whole: read per record, it stays as it is.
        version = read_document(settings.path, specs, whole=False)
        poison = untouched(version.document, specs)
        written = _patch(version, specs, changes)
        data = dumps(version.document)
    write_atomic(settings.path, data)
    return written, FileMark.of(data, settings.path.stat()), version, poison


def _patch(
    version: FileVersion, specs: Sequence[TableSpec], changes: Mapping[str, tuple[dict[str, Row], set[str]]]
) -> int:
    return sum(patch(version.document, spec, *changes[spec.collection]) for spec in specs)


async def _hold_poison(
    conn: Connection,
    settings: LowdbSettings,
    poison: Sequence[tuple[TableSpec, Untouched]],
    position: Mapping[str, Any],
    foreign: Mapping[str, set[str]],
) -> None:
    """Quarantine the poison records not held yet (a foreign write's keys are held as such)."""
    held = await quarantine.held(conn, settings.name)
    rows = []
    for spec, record in poison:
        table = quarantine_table(spec)
        if record.key is not None and ((table, record.key) in held.keys or record.key in foreign.get(spec.table, ())):
            continue
        if record.key is None and (table, record_hash(record.raw)) in held.keyless:
            continue
        rows.append(("lowdb", settings.name, table, record.key, record.raw, f"{record.at}: {record.reason}", position))
        log.error(
            "poison record in a pg-primary lowdb file quarantined; written back as the file holds it unless "
            "PostgreSQL changed its key, the other records keep flowing",
            path=str(settings.path),
            table=table,
            key=record.key,
            at=record.at,
            reason=record.reason,
        )
    if rows:
        await conn.executemany(
            """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, position)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            rows,
        )
    metrics.QUARANTINE_RECORDS.labels(settings.name).set(held.rows + len(rows))


class ReverseSync:
    """Runs the reverse path of one file until stopped or until the file leaves `pg-primary`."""

    def __init__(self, settings: LowdbSettings, pool: asyncpg.Pool, *, poll: float = POLL_SECONDS) -> None:
        self.settings = settings
        self.state = StreamState("lowdb", settings.name, mode=PG_PRIMARY)
        self._pool = pool
        self._poll = poll
        self._idle = asyncio.Event()
        self._idle.set()
        self._guard = Guard()
        metrics.FOREIGN_WRITES.labels(settings.name)  # the series exists at 0, so increase() sees the first

    async def run(self) -> None:
        """Flush every `poll` seconds, retrying transient failures with backoff."""
        with bound_contextvars(stream=self.settings.name, mode=PG_PRIMARY):
            log.info("reverse path started", path=str(self.settings.path))
            while True:
                await self._flush_with_retry()
                self.state.caught_up = True
                await asyncio.sleep(self._poll)

    async def stop(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let a file write in flight finish (up to `timeout`), then cancel."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("reverse write in flight did not finish in time", stream=self.settings.name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _flush_with_retry(self) -> None:
        written = 0
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            before_sleep=self._note_retry,
        ):
            with attempt:
                self._idle.clear()
                self.state.pending_since = self.state.pending_since or time.monotonic()
                try:
                    async with borrowed(self._pool, ACQUIRE_TIMEOUT) as conn:
                        written = await flush(conn, self.settings, self._guard)
                finally:
                    self._idle.set()
        self.state.pending_since = None
        self._record(written)

    def _note_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        metrics.RETRIES.labels("reverse").inc()
        metrics.SOURCE_UP.labels(self.settings.name).set(0)
        self.state.last_error = str(exc)
        log.warning("reverse write failed, retrying", error=str(exc))

    def _record(self, written: int) -> None:
        now = time.time()
        self.state.last_success, self.state.last_error = now, None
        metrics.SOURCE_UP.labels(self.settings.name).set(1)
        metrics.LAST_SUCCESS.labels(self.settings.name).set(now)
        if written:
            self.state.batches += 1
            self.state.rows["update"] += written
            metrics.REVERSE_RECORDS.labels(self.settings.name).inc(written)
            log.info("changes written back to the LowDB file", records=written)
