"""`syncd backfill questdb`: load a QuestDB table's history into PostgreSQL in resumable day chunks.

Each page is one batch whose checkpoint (stream `backfill:questdb:<table>`) names the day and the
cursor inside it, committed with the page's rows: a kill -9 at any instant resumes at the last
committed page, and the (ts, signal_key) key makes a replayed page a no-op. One page is fetched
while the previous one is applied (queue of 2), so memory stays at two pages whatever the size.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from syncd.config import QuestdbSettings
from syncd.errors import BatchRejected, ConfigError, RetriesExhausted, Retryable
from syncd.model import ApplyResult, Batch, Checkpoint, LoadStats
from syncd.questdb.reader import SOURCE, QuestdbReader, format_timestamp, make_reader
from syncd.questdb.refusals import Refusals
from syncd.questdb.source import VersionedSource, backoff, signal_changes
from syncd.questdb.sql import SIGNAL_PAGES, SIGNALS_TABLE, VERSIONED, Cursor, day_bounds, lit, next_page
from syncd.sink.postgres import PostgresSink

log = structlog.get_logger(__name__)
_ONE_US = timedelta(microseconds=1)
Progress = Callable[[int], None]


def stream_name(table: str) -> str:
    """The checkpoint stream of a table's backfill (apart from the live stream)."""
    return f"backfill:questdb:{table}"


class Backfill:
    """One table's backfill over [start, end] (inclusive, source clock)."""

    def __init__(
        self,
        settings: QuestdbSettings,
        pool: asyncpg.Pool,
        table: str,
        reader: QuestdbReader | None = None,
        *,
        give_up_after: float | None = None,
    ) -> None:
        """`give_up_after`: seconds a transient failure is retried before the run ends (None: forever)."""
        self.settings, self.pool, self.table = settings, pool, table
        self.give_up_after = give_up_after
        # Pages keep QuestDB's texts: keys and hashes come from them (no datetime formatted per row).
        self.reader = reader or make_reader(settings, keep_text=True)
        self.stream = stream_name(table)
        self.stats = LoadStats(table)
        self.refusals = Refusals(self.stream, table, None)

    async def close(self) -> None:
        """Close the reader."""
        await self.reader.close()

    async def bounds(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime] | None:
        """The range to load: the given bounds, else the table's min/max ts (None: empty table)."""
        if start is not None and end is not None:
            return start, end
        row = (await self._query(f"SELECT min(ts), max(ts) FROM {self.table}")).rows[0]
        if row[0] is None:
            return None
        return start or row[0], end or row[1]

    async def count(self, start: datetime, end: datetime) -> int:
        """Rows in range, for the progress bar's total."""
        sql = f"SELECT count(*) FROM {self.table} WHERE ts >= {lit(start)} AND ts <= {lit(end)}"
        return int((await self._query(sql)).rows[0][0])

    async def run(self, start: datetime | None, end: datetime | None, progress: Progress | None = None) -> LoadStats:
        """Load the range, resuming from this stream's checkpoint when it covers the same range."""
        began = time.monotonic()
        sink = PostgresSink(self.pool, await self._epoch())
        async with self.pool.acquire() as conn:
            # Rows already held (by the live stream or an earlier run) stay out: not quarantined twice.
            await self.refusals.refresh(None, conn)
        if self.table in VERSIONED:
            await self._versioned(sink)
        else:
            await self._signals(sink, start, end, progress)
        self.stats.seconds = time.monotonic() - began
        return self.stats

    async def _signals(
        self, sink: PostgresSink, start: datetime | None, end: datetime | None, progress: Progress | None
    ) -> None:
        if self.table != SIGNALS_TABLE:
            raise ConfigError("--table", "command line", f"no backfill for table {self.table!r}")
        span = await self.bounds(start, end)
        if span is None:
            return
        lo, hi = span
        saved = await sink.load_checkpoint(SOURCE, self.stream) or {}
        same = saved.get("from") == format_timestamp(lo) and saved.get("to") == format_timestamp(hi)
        if same and saved.get("done"):
            self.stats.resumed = True
            return
        cursor = Cursor.from_json(saved.get("cursor")) if same else Cursor(lo - _ONE_US)
        self.stats.resumed = same
        self.stats.total = await self.count(lo, hi)
        if progress and same:
            progress(await self.count(lo, cursor.ts) if cursor.ts is not None and cursor.ts >= lo else 0)
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        producer = asyncio.create_task(self._produce(queue, cursor, lo, hi))
        try:
            while (batch := await queue.get()) is not None:
                await self._apply(sink, batch)
                if progress:
                    progress(batch.size)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, queue: asyncio.Queue[Batch | None], cursor: Cursor, lo: datetime, hi: datetime) -> None:
        base = {"from": format_timestamp(lo), "to": format_timestamp(hi)}
        async for rows, after, day in self._pages(cursor, hi):
            position = {**base, "day": day, "cursor": after.as_json(), "done": False}
            changes = signal_changes(rows)
            await queue.put(Batch(Checkpoint(SOURCE, self.stream, position), [changes]))
        done = {**base, "cursor": Cursor(hi).as_json(), "done": True}
        await queue.put(Batch(Checkpoint(SOURCE, self.stream, done)))
        await queue.put(None)

    async def _pages(self, cursor: Cursor, hi: datetime) -> AsyncIterator[tuple[list[tuple[Any, ...]], Cursor, str]]:
        """Pages day by day: a chunk never crosses midnight, so each day's progress is its own."""
        while True:
            assert cursor.ts is not None
            base = cursor.ts + _ONE_US if cursor.within is None else cursor.ts
            day_lo, day_hi = day_bounds(base)
            top = min(day_hi - _ONE_US, hi)
            more = True
            while more:
                rows, cursor, more = await self._page(cursor, top)
                if rows:
                    yield rows, cursor, day_lo.date().isoformat()
            if top >= hi:
                return
            cursor = Cursor(top)

    async def _page(self, cursor: Cursor, top: datetime) -> tuple[list[tuple[Any, ...]], Cursor, bool]:
        page: tuple[list[tuple[Any, ...]], Cursor, bool] = await self._retry(
            lambda: next_page(self.reader, SIGNAL_PAGES, cursor, top, self.settings.page_size)
        )
        return page

    async def _retry(self, call: Callable[[], Any]) -> Any:
        attempt, started = 0, time.monotonic()
        while True:
            try:
                return await call()
            except Retryable as exc:
                attempt += 1
                pause, waited = max(exc.defer, backoff(attempt)), time.monotonic() - started
                if self.give_up_after is not None and waited + pause > self.give_up_after:
                    raise RetriesExhausted(str(exc), attempt, waited) from exc
                log.warning("backfill read failed, retrying", table=self.table, error=str(exc), attempt=attempt)
                await asyncio.sleep(pause)

    async def _apply(self, sink: PostgresSink, batch: Batch) -> None:
        started = time.monotonic()
        while True:
            try:
                results: dict[str, ApplyResult] = await self._retry(functools.partial(sink.apply, batch))
                break
            except BatchRejected as exc:
                # Rows PostgreSQL refuses on their own are quarantined, the rest of the page goes in
                # (syncd.questdb.refusals); the live stream keeps them out and replays them.
                rebuilt = self.refusals.rebuilt(batch, exc.rows)
                if rebuilt is None:
                    raise
                batch = rebuilt
        self.refusals.committed(batch)
        self.stats.sink_seconds += time.monotonic() - started
        self.stats.add(batch, results)

    async def _versioned(self, sink: PostgresSink) -> None:
        source = VersionedSource(self.settings, self.table, self.reader)
        async for batch in source.poll():
            position = {"done": True, **batch.checkpoint.position}
            await self._apply(sink, Batch(Checkpoint(SOURCE, self.stream, position), batch.tables))

    async def _epoch(self) -> int:
        # Write under the current leader epoch: a backfill must not fence a running daemon.
        epoch: int | None = await self.pool.fetchval("SELECT epoch FROM syncd.leader WHERE id = 1")
        return epoch or 0

    async def _query(self, sql: str) -> Any:
        return await self._retry(lambda: self.reader.query(sql))
