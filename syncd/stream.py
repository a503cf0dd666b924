"""A stream: one Source feeding the sink, with retries, metrics and the state /status shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from syncd import metrics
from syncd.database import is_transient
from syncd.errors import BatchRejected, Retryable
from syncd.model import ApplyResult, Batch, LoadStats, Progress
from syncd.sink.postgres import PostgresSink
from syncd.source import Health, Source

log = structlog.get_logger(__name__)
T = TypeVar("T")

# A rejected batch is not transient, but its cause may be fixed (the source, the schema): keep the
# checkpoint where it is and let the source build the next batch from its state then. Without rows
# to quarantine the rebuilt batch may be refused again: wait before it.
REJECTED_RETRY_SECONDS = 10.0

LoadReport = Callable[[str, Mapping[str, Any]], None]
"""Told (stream, summary) once a stream's initial load is done, after its log line (a terminal's table)."""


@dataclass(slots=True)
class StreamState:
    """What /status and `syncd status` report for one stream."""

    source: str
    stream: str
    mode: str = "mirror"
    caught_up: bool = False
    """The initial snapshot/backlog has been applied (the source may since have gone down)."""
    checkpoint: Any = None
    event_lag_seconds: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    health: Health | None = field(default=None, repr=False)
    """The running source, asked when reporting: a quiet stream commits nothing to learn from."""
    batches: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {"insert": 0, "update": 0, "delete": 0})
    failed: bool = False
    """Set by the supervisor while the stream waits to be restarted after a failure."""
    restarts: int = 0
    pending_since: float | None = None
    """Monotonic time since which a batch taken from the source waits to commit."""
    progress_at: float = field(default_factory=time.monotonic)
    """Monotonic time of the last commit (or of the start): what the progress watchdog reads."""
    started_at: float = field(default_factory=time.monotonic)
    load: LoadStats = field(default_factory=lambda: LoadStats(""))
    """The initial catch-up's counts: added to until it ends, then logged once as its summary."""
    loaded: bool = False
    initial_load: dict[str, Any] | None = None
    """The initial load's summary (the `initial load done` line's), once it is done."""

    @property
    def snapshot(self) -> Progress:
        """The source's catch-up progress as of now (a load in one transaction moves it too)."""
        return self.health.progress if self.health is not None else Progress()

    def catch_up(self) -> dict[str, Any]:
        """Rows read, staged and applied, percent and ETA (the work left at the rate so far) of the
        initial load. Short of caught up it says at most 99.9 %: the commit is still to come."""
        progress = self.snapshot
        applied = sum(r.inserted + r.updated + r.deleted for r in self.load.applied.values())
        done = progress.fraction()
        percent = eta = None
        if self.caught_up:
            percent, eta = 100.0, 0.0
        elif done is not None:
            percent = round(min(99.9, 100.0 * done), 1)
            elapsed = time.monotonic() - self.started_at
            eta = round(elapsed * (1.0 - done) / done, 1) if 0.0 < done < 1.0 else None
        return {
            "read": progress.read,
            "staged": progress.staged,
            "applied": applied,
            "total": progress.total,
            "percent": percent,
            "eta_seconds": eta,
        }

    @property
    def source_error(self) -> str | None:
        """Why the source cannot be read right now, if it cannot."""
        return self.health.source_error if self.health is not None else None

    @property
    def healthy(self) -> bool:
        """Caught up, running and its source readable: the truth behind `caught_up` in /status."""
        return self.caught_up and not self.failed and self.source_error is None

    def inherit(self, previous: StreamState) -> None:
        """Carry a failed run's counters into its restart; its error stays until the next commit."""
        self.rows, self.batches = dict(previous.rows), previous.batches
        self.restarts = previous.restarts + 1
        self.last_error, self.last_success = previous.last_error, previous.last_success
        self.event_lag_seconds = previous.event_lag_seconds

    def waiting_since(self) -> float | None:
        """Monotonic time of the oldest change (seen by the source or in flight) not yet committed."""
        seen = self.health.pending_since if self.health is not None else None
        times = [t for t in (seen, self.pending_since) if t is not None]
        return min(times) if times else None

    def stalled_for(self, now: float) -> float:
        """Seconds changes have waited with no commit meanwhile (0 when nothing waits)."""
        since = self.waiting_since()
        return 0.0 if since is None else now - max(since, self.progress_at)

    def current_lag(self) -> float | None:
        """Event lag as of now: the last commit's, or longer while a change waits (PG away, a stall)."""
        since = self.waiting_since()
        if since is None:
            return self.event_lag_seconds
        return max(self.event_lag_seconds or 0.0, time.monotonic() - since)

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of /status."""
        in_sync = self.health.in_sync_at if self.health is not None else None
        confirmed = [t for t in (self.last_success, in_sync) if t is not None]
        since = max(0.0, time.time() - max(confirmed)) if confirmed else None
        return {
            "source": self.source,
            "mode": self.mode,
            "caught_up": self.healthy,
            "source_up": not self.failed and self.source_error is None,
            "checkpoint": self.checkpoint,
            "event_lag_seconds": self.current_lag(),
            "seconds_since_last_success": since,
            "last_error": self.last_error or self.source_error,
            "restarts": self.restarts,
            "quarantined": self.health.quarantined if self.health is not None else 0,
            "batches": self.batches,
            "rows_applied": dict(self.rows),
            "catch_up": self.catch_up(),
            "initial_load": self.initial_load,
        }


class Runner(Protocol):
    """What the daemon runs per stream: a forward StreamRunner or a file's reverse path."""

    state: StreamState

    async def run(self) -> None:
        """Work until cancelled (or until the stream ends with an error the daemon handles)."""

    async def stop(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let the unit of work in flight finish within `timeout`, then cancel `task`."""


class StreamRunner:
    """Runs one Source until stopped; a batch in flight is finished or rolled back, never split."""

    def __init__(self, source: Source, sink: PostgresSink, on_load: LoadReport | None = None) -> None:
        self.source = source
        self.sink = sink
        self.on_load = on_load
        self.state = StreamState(source.source, source.stream, health=source, load=LoadStats(source.stream))
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        """Open the source at its checkpoint, then apply every batch it yields."""
        with bound_contextvars(stream=self.source.stream):
            try:
                await self._retrying(self._open)
                async for batch in self.source.batches():
                    self._note_progress()
                    await self._apply(batch)
                    self.state.caught_up = self.source.caught_up
                    self._note_progress()
                    if self._stopping:
                        return
            finally:
                await self.source.close()

    async def stop(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let the batch in flight commit (up to `timeout`), then cancel the stream task."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("batch in flight did not finish in time; rolling it back", stream=self.source.stream)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _note_progress(self) -> None:
        """Export the catch-up's progress; once caught up, log its summary (one JSON line) and stop counting."""
        state = self.state
        metrics.export_catch_up(self.source.stream, state.catch_up())
        if state.caught_up and not state.loaded:
            state.loaded = True
            state.load.seconds = time.monotonic() - state.started_at
            # Records read of the source (a LowDB batch holds only those differing from PostgreSQL).
            progress = state.snapshot
            state.load.rows = progress.read
            state.load.total = progress.total or progress.read
            state.initial_load = state.load.as_json()
            log.info("initial load done", summary=state.initial_load)
            if self.on_load is not None:
                self.on_load(self.source.stream, state.initial_load)

    async def _open(self) -> None:
        checkpoint = await self.sink.load_checkpoint(self.source.source, self.source.stream)
        self.state.checkpoint = checkpoint
        await self.source.open(checkpoint)

    async def _apply(self, batch: Batch) -> None:
        self.state.pending_since = self.state.pending_since or time.monotonic()
        started = time.monotonic()
        try:
            results = await self._retrying(lambda: self._attempt(batch))
        except BatchRejected as exc:
            await self._rejected(batch, exc)  # the change still waits: pending_since stays
            return
        self.source.committed(batch)
        if not self.state.loaded:
            self.state.load.sink_seconds += time.monotonic() - started
        self._record(batch, results)
        self.state.pending_since = None

    async def _attempt(self, batch: Batch) -> dict[str, ApplyResult]:
        # Only the transaction itself is "in flight": a stop waits for it, never for a backoff sleep.
        self._idle.clear()
        try:
            return await self.sink.apply(batch)
        finally:
            self._idle.set()

    async def _retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`, retried with jittered backoff while it fails transiently (PostgreSQL away)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            before_sleep=lambda rs: self._note_retry(rs.outcome.exception() if rs.outcome else None),
            reraise=True,
        ):
            with attempt:
                return await work()
        raise AssertionError("unreachable: tenacity retries until success or reraises")

    async def _rejected(self, batch: Batch, exc: BatchRejected) -> None:
        """Never retry the refused batch itself: the source rebuilds it from its current state."""
        metrics.BATCHES.labels(batch.checkpoint.stream, "rejected").inc()
        self.state.last_error = str(exc)
        log.error("batch rejected; checkpoint kept, the source rebuilds it", error=str(exc), rows=len(exc.rows))
        if not exc.rows:
            await asyncio.sleep(REJECTED_RETRY_SECONDS)
        self.source.rejected(batch, exc)

    def _note_retry(self, exc: BaseException | None) -> None:
        metrics.RETRIES.labels("sink").inc()
        metrics.BATCHES.labels(self.source.stream, "retried").inc()
        self.state.last_error = str(exc)
        log.warning("batch apply failed, retrying", error=str(exc))

    def _record(self, batch: Batch, results: dict[str, ApplyResult]) -> None:
        stream, now = self.source.stream, time.time()
        self.state.batches += 1
        if not self.state.loaded:
            self.state.load.add(batch, results)
        self.state.checkpoint = dict(batch.checkpoint.position)
        if self.state.last_error is not None:
            log.info("stream recovered", after=self.state.last_error)
        self.state.progress_at = time.monotonic()
        self.state.last_success, self.state.last_error = now, None
        for table, result in results.items():
            for op, n in (("insert", result.inserted), ("update", result.updated), ("delete", result.deleted)):
                self.state.rows[op] += n
                if n:
                    metrics.ROWS_APPLIED.labels(stream, table, op).inc(n)
        metrics.BATCHES.labels(stream, "committed").inc()
        metrics.LAST_SUCCESS.labels(stream).set(now)
        if batch.observed_at is not None:
            metrics.APPLY_LATENCY.labels(stream).observe(time.monotonic() - batch.observed_at)
        lag = _event_lag(batch, results, self.source.pending_since is not None)
        if lag is not None:
            self.state.event_lag_seconds = lag
            metrics.EVENT_LAG.labels(stream).set(lag)
        log.debug("batch committed", rows=batch.size, **self.state.rows)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, Retryable) or is_transient(exc)


def _event_lag(batch: Batch, results: dict[str, ApplyResult], more: bool) -> float | None:
    """The stream's event lag after committing `batch`; None leaves it as it was.

    0 once the source has nothing more to hand over: PostgreSQL holds all it has, however old
    (an untouched file, a quiet table). While more waits, the age of the newest change applied.
    A checkpoint-only batch in the middle of a poll (QuestDB's catch-up done, a reconcile's result)
    says the source has handed over all it had up to its bound: 0 too, or a backlog of day-old rows
    would leave a caught-up quiet table at a day of lag until its next row."""
    if not more or not batch.tables:
        return 0.0
    changed = any(r.inserted or r.updated or r.deleted for r in results.values())
    if changed and batch.source_time is not None:
        return max(0.0, time.time() - batch.source_time)
    return None
