"""QuestDB sources: the gap-free watermark poller of tp_capital_signals, and versioned tables.

One stream per table (`questdb:<table>`). Each poll asks QuestDB for `now()` (its clock, not
ours), reads pages up to `now - safety_lag` after the composite cursor, then follows deletes,
re-scans the lag window for late rows and runs the nightly (or triggered) reconcile. Every page
is one Batch whose checkpoint is the position after it, committed in the rows' transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.errors import BatchRejected, QueryRejected, SourceUnavailable, TableMissing
from syncd.model import Batch, Checkpoint, Progress, TableChanges
from syncd.questdb.identity import Look, TableWatch
from syncd.questdb.reader import SOURCE, QuestdbReader, Rows, format_timestamp, make_reader, parse_timestamp
from syncd.questdb.reconcile import Reconciler, reconcile_due
from syncd.questdb.refusals import Refusals, Replay
from syncd.questdb.sql import (
    DELETED_PAGES,
    DELETED_TABLE,
    SIGNAL_COLUMNS,
    SIGNAL_PAGES,
    SIGNALS_KEY,
    SIGNALS_PG_COLUMNS,
    SIGNALS_PG_TABLE,
    SIGNALS_TABLE,
    VERSIONED,
    Cursor,
    PageSpec,
    VersionedSpec,
    backlog_query,
    lit,
    next_page,
    signal_row,
    signal_row_text,
    versioned_row,
)

log = structlog.get_logger(__name__)

ESTIMATE_SECONDS = 5.0
"""A catch-up re-counts its backlog at most this often (one `count(*)` each): percent and ETA."""


class QuestdbBase:
    """Shared poll loop: source clock, retries with backoff, SOURCE_UP, clock skew."""

    source = SOURCE

    def __init__(
        self, settings: QuestdbSettings, table: str, reader: QuestdbReader | None = None, pg_dsn: str | None = None
    ) -> None:
        self.settings = settings
        self.table = table
        self.stream = stream_name(table)
        self.reader = reader or make_reader(settings)
        self.refusals = Refusals(self.stream, table, pg_dsn)
        self.position: dict[str, Any] = {}
        self.skew = 0.0
        self._last_ok: float | None = None
        self._caught_up = False
        self._progress = Progress()
        self._estimated_at = 0.0
        self._failures = 0
        self._committed: dict[str, Any] = {}
        self._rewind = False
        self._named_rows = False
        self._error: str | None = None
        self._polling_since: float | None = None

    @property
    def caught_up(self) -> bool:
        """True once a poll found nothing more to read."""
        return self._caught_up

    @property
    def progress(self) -> Progress:
        """Backlog rows read so far, and read plus what a count of the rest found (None before it)."""
        return self._progress

    @property
    def in_sync_at(self) -> float | None:
        """When the last poll read everything up to QuestDB's now()."""
        return self._last_ok

    @property
    def quarantined(self) -> int:
        """Held quarantine rows of this stream: rows PostgreSQL refused (see syncd.questdb.refusals)."""
        return self.refusals.held

    @property
    def source_error(self) -> str | None:
        """Why the last poll failed; None once a poll succeeds."""
        return self._error

    @property
    def pending_since(self) -> float | None:
        """While a poll runs (it may have more pages to hand over): since when."""
        return self._polling_since

    async def open(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Resume from the committed position."""
        self.position = dict(checkpoint or {})
        self._committed = dict(self.position)

    def committed(self, batch: Batch) -> None:
        """The batch is durable: its checkpoint is now our position, its quarantined rows held."""
        self.position = dict(batch.checkpoint.position)
        self._committed = dict(self.position)
        if batch.quarantine:
            self.refusals.committed(batch)
            metrics.QUARANTINE_RECORDS.labels(self.stream).set(self.refusals.held)

    def rejected(self, batch: Batch, error: BatchRejected) -> None:
        """Rewind to the committed position: the poll in progress ends and the next one re-reads,
        quarantining the rows the sink found refused on their own (the rest of the page flows)."""
        self.position = dict(self._committed)
        self._rewind = True
        self._named_rows = bool(error.rows)
        self.refusals.note(error.rows)

    async def close(self) -> None:
        """Close the reader and the quarantine state's connection."""
        await self.refusals.close()
        await self.reader.close()

    async def source_now(self) -> datetime:
        """QuestDB's `now()`; records the skew to our clock (source minus local)."""
        local = time.time()
        now = (await self.reader.query("SELECT now()")).value(datetime)
        self.skew = now.timestamp() - (local + time.time()) / 2
        metrics.CLOCK_SKEW.labels(SOURCE).set(self.skew)
        return now

    def source_time(self, newest: datetime | None) -> float | None:
        """`newest` (source clock) on our clock, so the stream's lag is source now - newest."""
        if newest is None:
            return None
        # Clamped: a row stamped in our future (skew, clock steps) never makes lag negative.
        return min(newest.timestamp() - self.skew, time.time())

    def batch(self, tables: list[TableChanges], newest: datetime | None, observed: float | None) -> Batch:
        """A Batch carrying the current position as its checkpoint; rows PostgreSQL refused ride
        in it as quarantine records, held rows stay out (every batch of the stream is built here)."""
        checkpoint = Checkpoint(SOURCE, self.stream, dict(self.position))
        sifted, quarantine = [], []
        for changes in tables:
            kept, records = self.refusals.sift(changes)
            sifted.append(kept)
            quarantine += records
        return Batch(
            checkpoint, sifted, observed_at=observed, source_time=self.source_time(newest), quarantine=quarantine
        )

    async def replays(self) -> list[Replay]:
        """Re-read the quarantine state; the rows an operator replayed since the last look."""
        found = await self.refusals.refresh(self.position.get("replayed_through"))
        metrics.QUARANTINE_RECORDS.labels(self.stream).set(self.refusals.held)
        return found

    def replayed(self) -> None:
        """The batch about to be built carries the replays: they are done once it commits (and
        read again if it does not), so the position names the newest one."""
        through = self.refusals.replayed_through
        if through is not None:
            self.position["replayed_through"] = through.isoformat()

    async def batches(self) -> AsyncIterator[Batch]:
        """Poll forever; transient failures back off and retry, never end the stream."""
        while True:
            self._polling_since = time.monotonic()
            try:
                async with aclosing(self.poll()) as batches:
                    async for batch in batches:
                        if not self._caught_up:
                            read = self._progress.read + batch.size + len(batch.quarantine)
                            total = self._progress.total
                            self._progress = Progress(read, None if total is None else max(total, read))
                        yield batch
                        if self._rewind:
                            break
                if not self._rewind:
                    self._ok()
            except SourceUnavailable as exc:
                self._polling_since = None
                await self._backoff(exc)
                continue
            except QueryRejected as exc:
                # Our SQL against their table: a column renamed or dropped upstream. Down, retried.
                self._polling_since = None
                await self._backoff(SourceUnavailable(SOURCE, str(exc), defer=5.0))
                continue
            self._polling_since = None
            if self._rewind:
                # A refused page is read again: at once when the sink named the rows to quarantine,
                # after a backoff when it could not (a cause bigger than rows, fixed by its owner).
                self._rewind = False
                if not self._named_rows:
                    self._failures += 1
                    await asyncio.sleep(backoff(self._failures))
                continue
            await asyncio.sleep(self.settings.poll_interval)

    def poll(self) -> AsyncGenerator[Batch, None]:
        """One poll cycle's batches (overridden)."""
        raise NotImplementedError

    def expect(self, left: int) -> None:
        """The catch-up has `left` rows still to read: its total is what it read plus those."""
        self._progress = dataclasses.replace(self._progress, total=self._progress.read + left)

    async def estimate(self, spec: PageSpec, cursor: Cursor, upper: datetime, *, first: bool) -> None:
        """During the catch-up, count the backlog after `cursor`: at a poll's start, then at most
        every ESTIMATE_SECONDS (rows written below `upper` meanwhile, late ones, move the total)."""
        now = time.monotonic()
        if self._caught_up or not (first or now - self._estimated_at >= ESTIMATE_SECONDS):
            return
        self._estimated_at = now
        self.expect((await self.reader.query(backlog_query(spec, cursor, upper))).value(int))

    def _ok(self) -> None:
        if self._error is not None:
            log.info("questdb source up", stream=self.stream)
        self._failures, self._error = 0, None
        self._caught_up = True
        metrics.SOURCE_UP.labels(self.stream).set(1)
        self._last_ok = time.time()

    async def _backoff(self, exc: SourceUnavailable) -> None:
        self._failures += 1
        self._error = str(exc)
        metrics.SOURCE_UP.labels(self.stream).set(0)
        metrics.RETRIES.labels(SOURCE).inc()
        level = "info" if isinstance(exc, TableMissing) else "warning"
        delay = max(exc.defer, backoff(self._failures))
        getattr(log, level)(
            "questdb read failed, retrying",
            stream=self.stream,
            error=str(exc),
            attempt=self._failures,
            delay=round(delay, 2),
        )
        await asyncio.sleep(delay)


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.2 s doubling up to 10 s."""
    return float(min(10.0, 0.2 * 2.0 ** min(attempt - 1, 8)) * random.uniform(0.5, 1.0))


class SignalsSource(QuestdbBase):
    """tp_capital_signals: watermark pages, deletes, lag-window rescan, reconcile."""

    def __init__(
        self, settings: QuestdbSettings, reader: QuestdbReader | None = None, *, pg_dsn: str | None = None
    ) -> None:
        super().__init__(settings, SIGNALS_TABLE, reader, pg_dsn)
        self.reconciler = Reconciler(self, pg_dsn)
        self.watch = TableWatch(self.reader, SIGNALS_TABLE)
        # (highest ts a poll covered, source now() of that poll): decides whether a rescanned row
        # was visible to the poll that covered its ts, i.e. whether it arrived late.
        self._history: deque[tuple[datetime, datetime]] = deque()
        self._last_rescan: datetime | None = None

    async def close(self) -> None:
        """Close the reader and the reconcile connection."""
        await self.reconciler.close()
        await super().close()

    async def poll(self) -> AsyncGenerator[Batch, None]:
        """One cycle: identity check, pages to now - lag, deletes, rescan, reconcile."""
        observed = time.monotonic()
        now = await self.source_now()
        replays = await self.replays()  # first: rows held (by a backfill too) stay out of every page
        look = await self._check_identity()
        upper = now - timedelta(seconds=self.settings.safety_lag)
        async for batch in self._pages(SIGNAL_PAGES, "cursor", upper, observed, deleted=False):
            yield batch
        self._remember(now)
        if not self._caught_up:
            # The runner reads caught_up after each batch: one checkpoint-only batch tells it.
            self._caught_up = True
            yield self.batch([], None, observed)
        if replays:
            yield await self._replay(replays, observed)
        first = "reconcile" not in self.position  # the first poll only catches up
        async for batch in self._pages(DELETED_PAGES, "deleted_cursor", upper, observed, deleted=True):
            # Upstream deletes by rebuilding the table, and rows inserted meanwhile can be lost; the
            # id and WAL checks miss a rebuild 8.2.0 hides (stale id, a sequencer already past the
            # old one by the next look): a new _deleted row schedules the reconcile as well.
            if not first:
                self.position.setdefault("reconcile_pending", "delete")
            yield batch
        if self._rescan_due(now):
            async for batch in self._rescan(now, observed):
                yield batch
        # The first poll only sets the baseline; the first nightly reconcile runs at reconcile_at.
        self.position.setdefault("reconcile", {"at": format_timestamp(now), "reason": "baseline"})
        if not (self.position.get("reconcile_pending") or reconcile_due(self.settings, self.position, now)):
            return
        if not look.applied:
            # A rebuilt table can read empty until its WAL is applied: comparing now would mark
            # every row deleted. The next poll tries again.
            log.info("reconcile deferred: WAL not applied yet", stream=self.stream)
            return
        async for batch in self.reconciler.run(now):
            yield batch

    async def _pages(
        self, spec: PageSpec, key: str, upper: datetime, observed: float, *, deleted: bool
    ) -> AsyncIterator[Batch]:
        cursor = Cursor.from_json(self.position.get(key))
        more, first = True, True
        while more:
            if not deleted:
                await self.estimate(spec, cursor, upper, first=first)
                first = False
            rows, cursor, more = await next_page(self.reader, spec, cursor, upper, self.settings.page_size)
            self.position[key] = cursor.as_json()
            if rows:
                yield self.batch([self.changes(rows, deleted=deleted)], _newest(rows, deleted), observed)

    async def _replay(self, replays: list[Replay], observed: float) -> Batch:
        """The replayed rows as QuestDB has them now (one query per table and timestamp); a row
        QuestDB no longer has is simply not there (its key is unblocked all the same)."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for r in replays:
            table, stamp = r.position.get("questdb_table"), _timestamp(r.position.get("ts"))
            if table in (SIGNALS_TABLE, DELETED_TABLE) and stamp is not None:
                wanted.setdefault((table, lit(stamp)), set()).add(r.key)
        found: list[TableChanges] = []
        for (table, at), keys in wanted.items():
            deleted = table == DELETED_TABLE
            columns = DELETED_PAGES.columns if deleted else SIGNAL_PAGES.columns
            result = await self.reader.query(f"SELECT {', '.join(columns)} FROM {table} WHERE ts = {at}")
            changes = self.changes(result.rows, deleted=deleted)
            rows = [row for row in changes.upserts if row[1] in keys]
            found.append(dataclasses.replace(changes, upserts=rows))
        log.info("replaying quarantined rows", stream=self.stream, rows=len(replays))
        self.replayed()
        return self.batch(found, None, observed)

    def changes(self, rows: list[tuple[Any, ...]], *, deleted: bool) -> TableChanges:
        """PG upserts for QuestDB rows; deleted-table rows keep the row with `deleted_at` set."""
        return signal_changes(rows, deleted=deleted)

    async def _check_identity(self) -> Look:
        """A rebuilt (new id, WAL restarted) or shrunk table schedules a reconcile."""
        look = await self.watch.look(self.position)
        if look.reason is not None:
            log.info(
                "questdb table rebuilt or shrank; reconcile scheduled",
                stream=self.stream,
                reason=look.reason,
                table_id=self.position.get("table_id"),
                count=self.position.get("row_count"),
            )
            self.position["reconcile_pending"] = look.reason
        return look

    def _remember(self, now: datetime) -> None:
        cursor = Cursor.from_json(self.position.get("cursor"))
        if cursor.ts is not None:
            self._history.append((cursor.ts, now))
        horizon = now - timedelta(seconds=self.settings.lag_window + self.settings.safety_lag)
        while self._history and self._history[0][1] < horizon:
            self._history.popleft()

    def _rescan_due(self, now: datetime) -> bool:
        last = self._last_rescan
        return last is None or (now - last).total_seconds() >= self.settings.rescan_interval

    async def _rescan(self, now: datetime, observed: float) -> AsyncIterator[Batch]:
        """Re-read the lag window behind the watermark: rows found there are applied and counted."""
        top = Cursor.from_json(self.position.get("cursor")).ts
        if top is None:
            self._last_rescan = now
            return
        since = self._last_rescan - timedelta(seconds=self.settings.rescan_interval) if self._last_rescan else None
        where = f"ingested_at > '{format_timestamp(since)}'" if since else ""
        spec = PageSpec(SIGNALS_TABLE, SIGNAL_COLUMNS, "ts", "ingested_at", where)
        cursor = Cursor(top - timedelta(seconds=self.settings.lag_window))
        more = True
        while more:
            rows, cursor, more = await next_page(self.reader, spec, cursor, top, self.settings.page_size)
            late = [r for r in rows if self._is_late(r)]
            if late:
                metrics.LATE_ROWS.labels(self.stream).inc(len(late))
                log.info("late rows applied", stream=self.stream, rows=len(late))
            if rows:
                yield self.batch([self.changes(rows, deleted=False)], None, observed)
        self._last_rescan = now

    def _is_late(self, row: tuple[Any, ...]) -> bool:
        """Was the row invisible to the poll that covered its ts (ingested after that poll)?"""
        ts, ingested = row[0], row[-1]
        if ingested is None:
            return False
        for covered, polled_at in self._history:
            if covered >= ts:
                return bool(ingested > polled_at)
        return False


def signal_changes(rows: list[tuple[Any, ...]], *, deleted: bool = False) -> TableChanges:
    """PG upserts for QuestDB signal rows (deleted-table rows carry `deleted_at` last)."""
    texts = rows.texts if isinstance(rows, Rows) and not deleted else None
    if texts is not None:
        pg_rows = [signal_row_text(t, r) for t, r in zip(texts, rows, strict=True)]
    elif deleted:
        pg_rows = [signal_row(r[:-1], r[-1]) for r in rows]
    else:
        pg_rows = [signal_row(r) for r in rows]
    return TableChanges(SIGNALS_PG_TABLE, SIGNALS_PG_COLUMNS, SIGNALS_KEY, pg_rows)


def _timestamp(text: object) -> datetime | None:
    """A quarantine position's `ts`, if it is one (the position is jsonb anybody could edit)."""
    try:
        return parse_timestamp(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _newest(rows: list[tuple[Any, ...]], deleted: bool) -> datetime | None:
    if not rows or deleted:
        return None
    newest: datetime = max(r[0] for r in rows)
    return newest


class VersionedSource(QuestdbBase):
    """telegram_bots / telegram_channels: the latest version per id, upserted when anything changed."""

    def __init__(
        self, settings: QuestdbSettings, table: str, reader: QuestdbReader | None = None, pg_dsn: str | None = None
    ) -> None:
        super().__init__(settings, table, reader, pg_dsn)
        self.spec: VersionedSpec = VERSIONED[table]
        self._last_full = 0.0

    async def poll(self) -> AsyncGenerator[Batch, None]:
        """Re-read the latest versions when count or max(updated_at) moved (or periodically)."""
        observed = time.monotonic()
        await self.source_now()
        stat = await self.reader.query(f"SELECT count(*), max(updated_at) FROM {self.table}")
        newest = stat.maybe(datetime, 0, 1)
        marker = {"count": stat.value(int), "max_updated_at": None if newest is None else format_timestamp(newest)}
        periodic = time.monotonic() - self._last_full >= self.settings.rescan_interval
        replays = await self.replays()  # a replayed id is read again with every other one
        if marker == self.position.get("marker") and not (periodic or replays):
            return
        cols = ", ".join(self.spec.columns)
        result = await self.reader.query(f"SELECT {cols} FROM {self.table} LATEST ON updated_at PARTITION BY id")
        self._last_full = time.monotonic()
        rows = [versioned_row(r) for r in result.rows if r[0]]
        if not self._caught_up:
            self.expect(len(rows))  # the catch-up is this one read: its rows are the total
        self.position["marker"] = marker
        self.replayed()
        changes = TableChanges(self.spec.pg_table, (*self.spec.columns, "row_hash"), ("id",), rows)
        yield self.batch([changes], newest, observed)


def stream_name(table: str) -> str:
    """The stream (and lease) name of a QuestDB table."""
    return f"questdb:{table}"


def build_questdb_sources(settings: QuestdbSettings, pg_dsn: str | None) -> list[QuestdbBase]:
    """One source per configured table, named `questdb:<table>`."""
    return [build_questdb_source(settings, table, pg_dsn) for table in settings.tables]


def build_questdb_source(settings: QuestdbSettings, table: str, pg_dsn: str | None) -> QuestdbBase:
    """The source of one configured table (the supervisor rebuilds it this way after a failure)."""
    if table == SIGNALS_TABLE:
        return SignalsSource(settings, pg_dsn=pg_dsn)
    if table in VERSIONED:
        return VersionedSource(settings, table, pg_dsn=pg_dsn)
    raise ValueError(f"questdb.tables: no spec for table {table!r}")


def utcnow() -> datetime:
    """Local time, aware UTC (for callers that need our clock, e.g. reconcile scheduling tests)."""
    return datetime.now(UTC)
