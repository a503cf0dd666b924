"""The LowDB source: watch the file's directory, read it safely, diff it by id into Batches.

lowdb@7 writes `.<name>.tmp` and renames it over the file (a new inode each time), lowdb@1
truncates and rewrites in place (a reader can see an empty or half file). So the source watches the
DIRECTORY and filters by file name, treats added and modified alike, and retries a read that is
empty, truncated or not JSON: such a read is never "every record deleted", and the last good state
is kept. Each good version is diffed per record (canonical hash) against what PostgreSQL holds and
becomes ONE Batch for all of the file's tables, checkpointed with the file's identity and hash.

On open the source loads `(id, row_hash)` of its tables from PostgreSQL (read-only), so the first
batch applies whatever changed while syncd was stopped. Deletes above the mass-delete threshold are
held until a second read confirms them or the operator drops a flag file `<file>.allow-mass-delete`
next to the LowDB file. Quarantined keys stay blocked until `syncd quarantine replay|discard`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog
from watchfiles import Change, awatch

from syncd import metrics
from syncd.config import LowdbSettings
from syncd.database import PG_ERRORS, Connection, borrowed, connect, is_transient
from syncd.errors import BatchRejected, UnreadableFile
from syncd.identifiers import quote_table
from syncd.lowdb.diff import Applied, Diff, FileVersion, apply_to, compare, gc_paused, mass_deletes, record_count
from syncd.lowdb.reader import VersionReader
from syncd.model import Batch, Checkpoint, LoadProgress, Progress
from syncd.quarantine import Held, held
from syncd.tables import TableSpec, specs_for

log = structlog.get_logger(__name__)
T = TypeVar("T")

SOURCE = "lowdb"
ALLOW_MASS_DELETE_SUFFIX = ".allow-mass-delete"
READ_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
"""Back-off between reads of a file that is empty or half written (lowdb@1 rewrites in place)."""
POLL_SECONDS = 1.0
"""Re-check cadence while something waits: a held mass delete, blocked keys, an unreadable file."""
WATCH_TIMEOUT_MS = 500
WATCH_STEP_MS = 1
"""watchfiles returns a group of events once no new one came for this long."""
WATCH_GROUP_MS = 50
"""...or once the group has lasted this long (a long in-place write keeps producing events)."""
INLINE_BYTES = 1 << 20
"""Files smaller than this (about 2,000 records) are read and diffed on the event loop itself."""
LOAD_ROWS = 20_000
"""Records mapped to rows per batch: a change bigger than this (a first load) commits in parts."""
PG_TIMEOUT = 10.0
"""Bound on each read-only query (and on getting a connection for it)."""


class LowdbSource:
    """One LowDB file as one stream; reads PostgreSQL (never writes it) through `pg` or its own DSN."""

    source = SOURCE

    def __init__(self, settings: LowdbSettings, *, pool: asyncpg.Pool | None = None, dsn: str | None = None) -> None:
        if pool is None and dsn is None:
            raise ValueError("LowdbSource needs a pool or a DSN to read row hashes")
        self.settings = settings
        self.stream = settings.name
        self.path = settings.path
        self.allow_path = settings.path.with_name(settings.path.name + ALLOW_MASS_DELETE_SUFFIX)
        self.specs: tuple[TableSpec, ...] = specs_for(settings)
        # The file's foreign-write counter exists at 0 from the start (the reverse path counts on
        # it in pg-primary): SyncdForeignWrite's increase() then sees the first one.
        metrics.FOREIGN_WRITES.labels(self.stream)
        self._reader = VersionReader(self.specs)
        self._pool, self._dsn = pool, dsn
        self._conn: asyncpg.Connection | None = None
        self._applied: Applied = {}
        self._held = Held(frozenset(), frozenset())
        self._held_at = float("-inf")
        self._held_stale = True
        self._position: dict[str, Any] = {}
        self._pending: tuple[Diff, bool, bool] | None = None
        """The batch in flight: its diff, whether its deletes go, whether it ends its version."""
        self._commits = 0
        self._refused: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._holding: frozenset[tuple[str, str]] | None = None
        self._caught_up = False
        self._load = LoadProgress()
        self._staged = 0
        """Rows of the first load's parts committed so far (`_load.staged` counts the part in flight)."""
        self._failing = False
        self._error: str | None = None
        self._dirty_at: float | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._settle: asyncio.TimerHandle | None = None
        self._settling_since: float | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        """True once the first batch (the start-up diff against PostgreSQL) has committed."""
        return self._caught_up

    @property
    def progress(self) -> Progress:
        """The first load as it runs: records examined of the file's, then rows its COPYs have taken."""
        load = self._load
        return Progress(load.read, load.total, self._staged + load.staged, load.to_stage)

    @property
    def in_sync_at(self) -> float | None:
        """Now, while the last version read is applied and no change, hold or failure is pending."""
        pending = self._dirty_at is not None or self._settle is not None
        pending = pending or self._pending is not None or self._holding is not None
        return time.time() if self._caught_up and not (pending or self._failing) else None

    @property
    def quarantined(self) -> int:
        """Held quarantine rows of this file, as last read from PostgreSQL."""
        return self._held.rows

    @property
    def source_error(self) -> str | None:
        """Why the file cannot be read right now (missing directory or file, unreadable)."""
        return self._error

    @property
    def pending_since(self) -> float | None:
        """When a change of the file was noticed that no batch has taken yet."""
        return self._dirty_at

    async def open(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Wait for the directory, start watching, then load what PostgreSQL holds (retry-safe)."""
        self._position = dict(checkpoint or {})
        if self._watcher is None:
            await self._await_directory()
            # Watch before the first read, so a write landing between the two is never missed.
            watching = self._watch() if self.settings.poll_interval is None else self._poll(self.settings.poll_interval)
            self._watcher = asyncio.create_task(watching, name=f"watch:{self.stream}")
            await asyncio.sleep(0)  # the task's first step creates the inotify watch (awatch opens it at once)
        self._applied = await self._load_applied()
        self._reader = VersionReader(self.specs)  # what it knew PostgreSQL to hold is re-read just now
        self._dirty_at = time.monotonic()

    async def _await_directory(self) -> None:
        """A missing directory (volume not mounted yet) is this stream's wait, not a failure."""
        directory = self.path.parent
        while not await asyncio.to_thread(directory.is_dir):
            self._set_up(False, f"directory {directory} does not exist")
            await asyncio.sleep(POLL_SECONDS)

    async def close(self) -> None:
        """Stop the watcher thread and the private connection."""
        self._stop.set()
        if self._settle is not None:
            self._settle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._conn is not None:
            self._conn.terminate()
        metrics.SOURCE_UP.labels(self.stream).set(0)

    async def batches(self) -> AsyncIterator[Batch]:
        """A batch per changed file version (a big change in parts); the first one always."""
        while True:
            await self._wait()
            async for batch in self._cycle():
                yield batch

    def committed(self, batch: Batch) -> None:
        """The batch is durable: what PostgreSQL holds now includes its rows."""
        self._commits += 1
        final = True
        if self._pending is not None:
            result, with_deletes, final = self._pending
            apply_to(self._applied, result.tables, with_deletes=with_deletes)
            self._staged += sum(len(t.upserts) for t in result.tables)
            self._load.staged = 0  # the next part's COPYs count afresh
            self._pending = None
        self._position = dict(batch.checkpoint.position)
        self._caught_up = self._caught_up or final
        self._refused.clear()  # quarantined now, or changed since: either way no longer ours to hold
        if batch.quarantine:
            # Re-read the held count now: a quiet file would otherwise report it at its next change.
            self._held_stale = True
            self._wake.set()

    def rejected(self, batch: Batch, error: BatchRejected) -> None:
        """Forget the refused batch and re-read the file; its refused rows will be quarantined."""
        self._pending = None
        for row in error.rows:
            spec = next((s for s in self.specs if s.table == row.table and s.key_of(str(row.key[-1])) == row.key), None)
            if spec is not None:
                self._refused[(spec.collection, str(row.key[-1]))] = (row.row_hash, f"[{row.sqlstate}] {row.reason}")
        self._mark_dirty()

    # -- one cycle: read, diff, guard --------------------------------------------------------

    async def _due(self) -> tuple[FileVersion | None, float] | None:
        """The version to diff (None: missing or unreadable) and when its change was noticed; None
        when nothing is due (no change, no unblocked key, nothing held or failing)."""
        # A change is read while the held keys are fetched (one round trip less per edit); the
        # diff, which needs both, waits for both.
        refreshing = asyncio.ensure_future(self._refresh_held()) if self._held_due() else None
        try:
            if self._dirty_at is None:
                unblocked = await refreshing if refreshing is not None else False
                if not (unblocked or self._failing or self._holding is not None):
                    return None
            observed = self._dirty_at or time.monotonic()
            self._dirty_at = None
            version = await self._read()
            if refreshing is not None:
                await refreshing
        finally:
            if refreshing is not None:
                refreshing.cancel()
        return version, observed

    async def _cycle(self) -> AsyncIterator[Batch]:
        due = await self._due()
        if due is None:
            return
        version, observed = due
        if version is None:
            missing = not await asyncio.to_thread(self.path.exists)
            if missing:
                self._set_up(False, f"file {self.path} does not exist (lowdb creates it on its first write)")
                if not self._caught_up:
                    yield self._missing_file_batch(observed)
            return
        load = None
        if not self._caught_up:
            load = self._load = LoadProgress(sum(record_count(version.collection(s)) for s in self.specs))
            self._staged = 0
        refused = dict(self._refused)
        plan = await self._off_loop(compare, version, self.specs, self._applied, self._held, refused, load)
        with_deletes = await self._deletes_allowed(plan)
        if self._caught_up and plan.empty and version.position["sha"] == self._position.get("sha"):
            return
        if load is not None:
            load.to_stage = plan.pending
        async for part, final in self._parts(plan):
            for record in part.quarantine:
                log.warning(
                    "record quarantined", path=str(self.path), table=record.table, key=record.key, reason=record.reason
                )
            self._pending = (part, with_deletes, final)
            position = dict(version.position) if final else self._loading_position()
            if final and not with_deletes:
                position["held_deletes"] = sum(len(t.deletes) for t in part.tables)
            commits = self._commits
            yield Batch(
                Checkpoint(SOURCE, self.stream, position),
                [t.changes(with_deletes=with_deletes) for t in part.tables],
                observed_at=observed,
                source_time=version.mtime,
                quarantine=part.quarantine,
                mirror_of=self.stream,
                progress=load,
            )
            if self._commits == commits:
                return  # rejected (the file is read again) or stopped: the rest of this version waits

    async def _parts(self, plan: Diff) -> AsyncIterator[tuple[Diff, bool]]:
        """`plan` mapped to rows LOAD_ROWS at a time; the next part is mapped while one is applied."""
        if plan.pending <= LOAD_ROWS:  # one part (an edit): mapped right here, no task to hand it over
            yield await self._off_loop(plan.take, LOAD_ROWS), True
            return
        # The collector stays off until the load ends: each part's rows outlive their mapping (until
        # their COPY), so every collection after a part would traverse all of them once more.
        with gc_paused():
            mapping = asyncio.ensure_future(self._off_loop(plan.take, LOAD_ROWS))
            try:
                while True:
                    part = await mapping
                    final = not plan.pending
                    if not final:
                        mapping = asyncio.ensure_future(self._off_loop(plan.take, LOAD_ROWS))
                    yield part, final
                    if final:
                        return
            finally:
                # A mapping thread reads this version's records: the next read may not patch them before it ends.
                await asyncio.gather(mapping, return_exceptions=True)

    def _loading_position(self) -> dict[str, Any]:
        """The checkpoint of a part before the last: no `sha`, since PostgreSQL holds no whole version."""
        position = {k: v for k, v in self._position.items() if k != "sha"}
        return {**position, "loading": True}

    async def _read(self) -> FileVersion | None:
        """The current version, retried while empty/half written; None keeps the last good state."""
        error: Exception | None = None
        for delay in (0.0, *READ_RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            try:
                version = await self._off_loop(self._reader.read, self.path)
            except FileNotFoundError:
                return None  # not a half-written file: no point retrying (the caller says why)
            except (UnreadableFile, OSError) as exc:
                error = exc
                continue
            self._set_up(True)
            return version
        self._set_up(False, f"unreadable, keeping the last good version: {error}")
        return None

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread, or inline while the file is small.

        Once caught up, an edit of a file under INLINE_BYTES is read and diffed in well under a
        millisecond: handing that to a thread and back would cost more than the work itself. The
        first read (every record parsed and mapped) always goes to a thread.
        """
        if self._caught_up and self._reader.size < INLINE_BYTES:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def _set_up(self, up: bool, error: str | None = None) -> None:
        """Record the source's state; each change of it is one log line."""
        if error != self._error:
            if up:
                log.info("lowdb source up", path=str(self.path))
            else:
                log.warning("lowdb source down", path=str(self.path), error=error)
        self._failing, self._error = not up, error
        metrics.SOURCE_UP.labels(self.stream).set(1 if up else 0)

    def _missing_file_batch(self, observed: float) -> Batch:
        # No file yet (lowdb@7 creates it on the first write): nothing to apply, nothing deleted.
        self._pending = None
        position = {**self._position, "missing": True}
        return Batch(Checkpoint(SOURCE, self.stream, position), [], observed_at=observed, mirror_of=self.stream)

    async def _deletes_allowed(self, result: Diff) -> bool:
        """The mass-delete guard: True unless deletes are over the threshold and unconfirmed."""
        over = mass_deletes(result.tables, self.settings.mass_delete_ratio, self.settings.mass_delete_min)
        if not over:
            self._release_hold()
            return True
        deleting = frozenset((t.spec.table, k) for t in result.tables for k in t.deletes)
        if await asyncio.to_thread(self.allow_path.exists):
            await asyncio.to_thread(self.allow_path.unlink, missing_ok=True)
            log.warning("mass delete allowed by flag file", tables=dict(over), flag=str(self.allow_path))
            self._release_hold()
            return True
        if self._holding is not None and self._holding <= deleting:
            log.warning("mass delete confirmed by a second read", tables=dict(over))
            self._release_hold()
            return True
        if self._holding is None:
            log.warning(
                "mass delete held until a second read confirms it", tables=dict(over), allow=f"touch {self.allow_path}"
            )
            metrics.MASS_DELETES_HELD.labels(self.stream).inc()
        self._holding = deleting
        metrics.MASS_DELETE_HELD.labels(self.stream).set(1)
        return False

    def _release_hold(self) -> None:
        self._holding = None
        metrics.MASS_DELETE_HELD.labels(self.stream).set(0)

    # -- PostgreSQL (read-only) ---------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection, or the private one; either is discarded when it fails transiently."""
        if self._pool is not None:
            async with borrowed(self._pool, PG_TIMEOUT) as conn:
                yield conn
            return
        if self._conn is None or self._conn.is_closed():
            assert self._dsn is not None
            self._conn = await connect(self._dsn, timeout=PG_TIMEOUT)
        try:
            yield self._conn
        except BaseException as exc:
            if is_transient(exc) or isinstance(exc, asyncio.CancelledError):
                self._conn.terminate()
            raise

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args, timeout=PG_TIMEOUT)
            return rows

    async def _load_applied(self) -> Applied:
        """`id → row_hash` of every row the file's tables hold, to diff the first read against."""
        applied: Applied = {}
        for spec in self.specs:
            if spec.document:
                rows = await self._fetch(
                    "SELECT id, row_hash FROM syncd.documents WHERE collection = $1", spec.collection
                )
            else:
                rows = await self._fetch(f"SELECT id, row_hash FROM {quote_table(spec.table)}")
            applied[spec.collection] = {r["id"]: bytes(r["row_hash"]) for r in rows}
        return applied

    def _held_due(self) -> bool:
        """Whether the held rows must be read again before this cycle's diff.

        Only this stream's own batches hold its records while it runs (the reverse path, which
        holds foreign writes, runs instead of it), and only held rows can be replayed: with none
        held and no quarantine committed since the last read, a read per edit would learn nothing.
        It is still re-read every POLL_SECONDS, in case.
        """
        fresh = time.monotonic() - self._held_at < POLL_SECONDS
        return not (fresh and self._held.rows == 0 and not self._held.keyless and not self._held_stale)

    async def _refresh_held(self) -> bool:
        """Re-read the held quarantine rows; True when a key was unblocked (replay/discard)."""
        before = self._held
        try:
            async with self._connection() as conn:
                self._held = await held(conn, self.stream)
        except PG_ERRORS as exc:
            # A stale set only keeps keys blocked longer: safe. The sink will retry PG anyway.
            log.warning("could not read quarantine state", error=str(exc))
            return False
        self._held_at, self._held_stale = time.monotonic(), False
        metrics.QUARANTINE_RECORDS.labels(self.stream).set(self._held.rows)
        return bool(before.keys - self._held.keys or before.keyless - self._held.keyless)

    # -- watching ---------------------------------------------------------------------------

    async def _wait(self) -> None:
        if self._dirty_at is not None:
            return
        waiting = self._failing or self._holding is not None or self._held.rows > 0
        try:
            await asyncio.wait_for(self._wake.wait(), POLL_SECONDS if waiting else None)
        except TimeoutError:
            return
        self._wake.clear()

    async def _watch(self) -> None:
        """Turn directory events for our file (or its allow flag) into wake-ups.

        A rename onto the file (lowdb@7: `added`) puts a complete version in place: read it at once.
        A write in place (lowdb@1: `modified`) may still be going on: read once the file has been
        quiet for `debounce`; every further event restarts that wait, so the read sees the final
        version (and a half-written one is retried by `_read`).
        """
        names = {self.path.name, self.allow_path.name}
        async for changes in awatch(
            self.path.parent,
            watch_filter=lambda _, path: Path(path).name in names,
            debounce=WATCH_GROUP_MS,
            step=WATCH_STEP_MS,
            stop_event=self._stop,
            rust_timeout=WATCH_TIMEOUT_MS,
            recursive=False,
        ):
            if any(change == Change.added or Path(path).name != self.path.name for change, path in changes):
                self._mark_dirty()
            else:
                self._settle_then_mark()

    def _settle_then_mark(self) -> None:
        """Mark dirty once no further event came for `debounce` (observed from the first event)."""
        since = time.monotonic()
        if self._settle is not None:
            self._settle.cancel()
            since = self._settling_since or since
        self._settling_since = since
        self._settle = asyncio.get_running_loop().call_later(self.settings.debounce, self._settled)

    def _settled(self) -> None:
        self._settle = None
        self._dirty_at = self._dirty_at or self._settling_since
        self._settling_since = None
        self._wake.set()

    async def _poll(self, interval: float) -> None:
        """Stat the file and its allow flag every `interval`; a changed identity is a wake-up."""
        seen = await asyncio.to_thread(self._identities)
        while True:
            await asyncio.sleep(interval)
            now = await asyncio.to_thread(self._identities)
            if now != seen:
                seen = now
                self._mark_dirty()

    def _identities(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        # inode catches lowdb@7's rename, size and mtime_ns lowdb@1's rewrite in place.
        return tuple(_identity(p) for p in (self.path, self.allow_path))

    def _mark_dirty(self) -> None:
        self._dirty_at = self._dirty_at or time.monotonic()
        self._wake.set()


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
