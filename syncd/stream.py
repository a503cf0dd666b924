"""A stream: one Source feeding the sink, with retries, metrics and the state /status shows."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from syncd import metrics
from syncd.errors import BatchRejected, Retryable
from syncd.model import ApplyResult, Batch
from syncd.sink.postgres import PostgresSink
from syncd.source import Health, Source

log = structlog.get_logger(__name__)

# A rejected batch is not transient, but its cause may be fixed (the source, the schema): keep the
# checkpoint where it is and let the source build the next batch from its state then. Without rows
# to quarantine the rebuilt batch may be refused again: wait before it.
REJECTED_RETRY_SECONDS = 10.0


@dataclass(slots=True)
class StreamState:
    """What /status and `syncd status` report for one stream."""

    source: str
    stream: str
    mode: str = "mirror"
    caught_up: bool = False
    checkpoint: Any = None
    event_lag_seconds: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    health: Health | None = field(default=None, repr=False)
    """The running source, asked when reporting: a quiet stream commits nothing to learn from."""
    batches: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {"insert": 0, "update": 0, "delete": 0})

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of /status."""
        in_sync = self.health.in_sync_at if self.health is not None else None
        confirmed = [t for t in (self.last_success, in_sync) if t is not None]
        since = max(0.0, time.time() - max(confirmed)) if confirmed else None
        return {
            "source": self.source,
            "mode": self.mode,
            "caught_up": self.caught_up,
            "checkpoint": self.checkpoint,
            "event_lag_seconds": self.event_lag_seconds,
            "seconds_since_last_success": since,
            "last_error": self.last_error,
            "quarantined": self.health.quarantined if self.health is not None else 0,
            "batches": self.batches,
            "rows_applied": dict(self.rows),
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

    def __init__(self, source: Source, sink: PostgresSink) -> None:
        self.source = source
        self.sink = sink
        self.state = StreamState(source.source, source.stream, health=source)
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        """Open the source at its checkpoint, then apply every batch it yields."""
        stream = self.source.stream
        with bound_contextvars(stream=stream):
            checkpoint = await self.sink.load_checkpoint(self.source.source, stream)
            self.state.checkpoint = checkpoint
            await self.source.open(checkpoint)
            try:
                async for batch in self.source.batches():
                    await self._apply(batch)
                    self.state.caught_up = self.source.caught_up
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

    async def _apply(self, batch: Batch) -> None:
        self._idle.clear()
        try:
            results: dict[str, ApplyResult] | BatchRejected = await self._apply_with_retry(batch)
        except BatchRejected as exc:
            results = exc
        finally:
            self._idle.set()
        if isinstance(results, BatchRejected):
            await self._rejected(batch, results)
            return
        self.source.committed(batch)
        self._record(batch, results)

    async def _apply_with_retry(self, batch: Batch) -> dict[str, ApplyResult]:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Retryable),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            before_sleep=lambda rs: self._note_retry(rs.outcome.exception() if rs.outcome else None),
            reraise=True,
        ):
            with attempt:
                return await self.sink.apply(batch)
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
        self.state.checkpoint = dict(batch.checkpoint.position)
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
        if batch.source_time is not None:
            lag = max(0.0, now - batch.source_time)
            self.state.event_lag_seconds = lag
            metrics.EVENT_LAG.labels(stream).set(lag)
        log.debug("batch committed", rows=batch.size, **self.state.rows)
