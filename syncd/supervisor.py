"""The supervisor: runs each stream, contains its failures, restarts it with backoff, reports it.

A stream that raises what it did not expect is marked failed (`syncd_source_up` 0, `last_error`
in /status, one error line), and is rebuilt from its factory after a capped, jittered backoff: the
new runner starts from the stream's checkpoint in PostgreSQL, so nothing is skipped or applied
twice. The other streams never notice. A stream that sits on changes without committing for
`stall_timeout` (the progress watchdog) is failed the same way: a silent wait is a failure too.

Two endings are not failures: `Fenced` (another instance took the stream's lease; the daemon gives
it up) and
`ModeChanged` (the file's cutover mode moved; the daemon starts the other runner).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from syncd import metrics
from syncd.errors import Fenced, ModeChanged
from syncd.stream import Runner

log = structlog.get_logger(__name__)

FIRST_RESTART_SECONDS = 0.5
"""Backoff base: the first restart comes after 0.25 to 0.5 s, doubling per failure in a row."""


def restart_delay(failures: int, cap: float) -> float:
    """Capped exponential backoff with jitter (half to full), so restarts of many streams spread out."""
    return float(min(cap, FIRST_RESTART_SECONDS * 2.0 ** min(failures - 1, 16)) * random.uniform(0.5, 1.0))


@dataclass(slots=True)
class _Child:
    """One supervised stream: how to build its runner, the runner and the task running it."""

    factory: Callable[[], Runner]
    runner: Runner
    task: asyncio.Task[None] | None = None
    failures: int = 0
    """Failures in a row (reset once a restarted runner commits): drives the backoff."""
    batches_at_start: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Owns every stream task of a leader; `tick()` reaps, restarts and watches them."""

    def __init__(self, *, stop_timeout: float, stall_timeout: float, backoff_max: float) -> None:
        self._stop_timeout = stop_timeout
        self._stall_timeout = stall_timeout
        self._backoff_max = backoff_max
        self._children: dict[str, _Child] = {}

    def __contains__(self, stream: object) -> bool:
        return stream in self._children

    def runners(self) -> Iterator[Runner]:
        """The current runner of each stream, failed ones (waiting for their restart) included."""
        return (child.runner for child in self._children.values())

    def start(self, factory: Callable[[], Runner]) -> None:
        """Build a runner with `factory` and run it; the same factory rebuilds it after a failure."""
        runner = factory()
        child = _Child(factory, runner)
        self._children[runner.state.stream] = child
        metrics.STREAM_RESTARTS.labels(runner.state.stream)  # exported as 0 before any restart
        self._launch(child)

    async def stop(self, stream: str) -> None:
        """Stop one stream (its batch in flight commits or rolls back) and forget it."""
        child = self._children.pop(stream, None)
        if child is not None and child.task is not None:
            await child.runner.stop(child.task, self._stop_timeout)
        metrics.forget_stream(stream)

    async def stop_all(self) -> None:
        """Stop every stream at once, each within the stop timeout."""
        children, self._children = self._children, {}
        await asyncio.gather(
            *(c.runner.stop(c.task, self._stop_timeout) for c in children.values() if c.task is not None)
        )
        for stream in children:
            metrics.forget_stream(stream)

    async def tick(self) -> list[tuple[str, Fenced]]:
        """Reap ended streams, restart the due ones, fail stalled ones; the fenced ones are returned (and let go)."""
        now = time.monotonic()
        fenced: list[tuple[str, Fenced]] = []
        for stream, child in list(self._children.items()):
            if child.task is None:
                if now >= child.restart_at:
                    self._restart(stream, child)
            elif child.task.done():
                exc = self._reap(stream, child)
                if exc is not None:
                    fenced.append((stream, exc))
            else:
                await self._watch(stream, child, now)
        return fenced

    def _launch(self, child: _Child) -> None:
        child.batches_at_start = child.runner.state.batches
        child.task = asyncio.create_task(child.runner.run(), name=child.runner.state.stream)

    def _reap(self, stream: str, child: _Child) -> Fenced | None:
        task, child.task = child.task, None
        assert task is not None
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, Fenced):
            del self._children[stream]
            return exc
        if isinstance(exc, ModeChanged):
            del self._children[stream]
            metrics.forget_stream(stream)
            log.info("stream left its mode", stream=stream, reason=str(exc))
            return None
        if task.cancelled():
            self._fail(stream, child, "cancelled from outside the supervisor")
        else:
            self._fail(stream, child, repr(exc) if exc is not None else "ended without being stopped")
        return None

    async def _watch(self, stream: str, child: _Child, now: float) -> None:
        """The progress watchdog: changes waiting past `stall_timeout` with no commit fail the stream."""
        stalled = child.runner.state.stalled_for(now)
        if stalled <= self._stall_timeout:
            return
        task, child.task = child.task, None
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._fail(
            stream,
            child,
            f"stalled: changes waiting {stalled:.0f}s without a commit (stall_timeout {self._stall_timeout:g}s)",
        )

    def _fail(self, stream: str, child: _Child, error: str) -> None:
        state = child.runner.state
        if state.batches > child.batches_at_start:
            child.failures = 0  # it made progress since its last start: this is a new failure
        child.failures += 1
        delay = restart_delay(child.failures, self._backoff_max)
        child.restart_at = time.monotonic() + delay
        state.failed, state.last_error = True, error
        metrics.SOURCE_UP.labels(stream).set(0)
        log.error(
            "stream failed; restarting from its checkpoint",
            stream=stream,
            error=error,
            failures=child.failures,
            delay=round(delay, 2),
        )

    def _restart(self, stream: str, child: _Child) -> None:
        previous = child.runner.state
        child.runner = child.factory()
        child.runner.state.inherit(previous)
        metrics.STREAM_RESTARTS.labels(stream).inc()
        self._launch(child)
