"""The daemon's lifecycle, shaped like uvicorn's Server.serve(): startup, main loop, shutdown.

Startup binds the ops endpoint and opens the pool; the main loop ticks, leads or waits as a
standby, runs one StreamRunner per source and reaps their results; shutdown stops the sources,
lets the batch in flight commit or roll back within `daemon.stop_timeout`, releases the leader lock,
closes the pool and the endpoint last.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

import asyncpg
import structlog

from syncd import metrics
from syncd.config import Config, LowdbSettings
from syncd.cutover import clients, handover
from syncd.cutover import state as cutover
from syncd.cutover.housekeeping import Housekeeping
from syncd.cutover.reverse import ReverseSync
from syncd.database import create_pool
from syncd.errors import Fenced, ModeChanged
from syncd.http import OpsServer
from syncd.leader import Leadership
from syncd.lowdb.source import LowdbSource
from syncd.registry import build_sources
from syncd.relay import KafkaRelay
from syncd.sink.postgres import PostgresSink
from syncd.stream import Runner, StreamRunner
from syncd.systemd import Notifier

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.1
CUTOVER_POLL_SECONDS = 0.5
"""How often the leader re-reads syncd.cutover to run each LowDB file in its mode."""
PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Daemon:
    """One syncd process: leader or standby, serving the ops endpoint either way."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.should_exit = False
        self.force_exit = False
        self.last_tick = time.monotonic()
        self._notifier = Notifier(config.daemon.notify_socket)
        self._instance = config.daemon.instance or f"{socket.gethostname()}:{id(self):x}"
        self._leadership = Leadership(
            config.postgres.dsn.get_secret_value(), self._instance, poll=config.daemon.standby_poll
        )
        self._pool: asyncpg.Pool | None = None
        self._http = OpsServer(self, config.http.host, config.http.port)
        self._acquire: asyncio.Task[int] | None = None
        self._runners: dict[asyncio.Task[None], Runner] = {}
        self._sink: PostgresSink | None = None
        self._files: dict[str, tuple[cutover.Mode, asyncio.Task[None] | None]] = {}
        """Per LowDB file: the mode it runs in and the task running it (none once retired)."""
        self._clients: dict[str, list[clients.ClientReport]] = {}
        """Per LowDB file: its cutover clients, as last read from the registry."""
        self._housekeeping: Housekeeping | None = None
        self._streams_started = False
        self._last_cutover_check = 0.0
        self._last_watchdog = 0.0
        self._last_leader_check = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM; a second signal forces exit without waiting."""
        with self.capture_signals():
            await self._serve()

    async def _serve(self) -> None:
        await self.startup()
        if self.should_exit:
            return
        await self.main_loop()
        await self.shutdown()

    async def startup(self) -> None:
        """Open the endpoint and the pool; leadership is sought from the main loop."""
        await self._http.start()
        self._pool = await create_pool(self.config.postgres)
        log.info("syncd started", http=f"http://{self.config.http.host}:{self._http.port}", instance=self._instance)
        self._notifier.notify(READY=1, STATUS="standby: waiting for the leader lock")

    async def main_loop(self) -> None:
        """Tick until told to exit: heartbeat, leadership, stream reaping."""
        while not self.should_exit:
            await asyncio.sleep(TICK_SECONDS)
            await self.on_tick()

    async def on_tick(self) -> None:
        """One heartbeat: watchdog ping, leader bookkeeping, reaping finished streams."""
        self.last_tick = time.monotonic()
        self._ping_watchdog()
        if self._acquire is None and not self._leadership.is_leader:
            self._acquire = asyncio.create_task(self._leadership.acquire())
        elif self._acquire is not None and self._acquire.done():
            epoch, self._acquire = self._acquire.result(), None
            self._start_streams(epoch)
        if self._leadership.is_leader:
            await self._check_leadership()
            await self._follow_cutover()
            await self._reap_streams()

    async def shutdown(self) -> None:
        """Stop sources, settle the batch in flight, release the lock, close pool, endpoint last."""
        self._notifier.notify(STOPPING=1, STATUS="stopping")
        log.info("shutting down", streams=len(self._runners))
        summary = self._summary()
        await self._stop_streams()
        if self._acquire is not None:
            self._acquire.cancel()
            await asyncio.gather(self._acquire, return_exceptions=True)
        await self._leadership.release()
        if self._pool is not None:
            await _close_pool(self._pool, self.config.daemon.stop_timeout)
        await self._http.stop()
        log.info("stopped", **summary)

    # -- leadership and streams ---------------------------------------------------------------

    def _start_streams(self, epoch: int) -> None:
        """QuestDB streams start now; LowDB files start on this tick, each in its cutover mode."""
        assert self._pool is not None
        self._sink = PostgresSink(self._pool, epoch)
        for source in build_sources(self.config, self._pool, lowdb=False):
            _ = self._launch(StreamRunner(source, self._sink))
        if self.config.kafka is not None:
            _ = self._launch(KafkaRelay(self.config.kafka, self._pool))
        self._housekeeping = Housekeeping(self._pool, self.config.lowdb, self.config.daemon.verify_interval)
        self._last_cutover_check = 0.0
        self._notifier.notify(STATUS=f"leader (epoch {epoch})")

    def _launch(self, runner: Runner) -> asyncio.Task[None]:
        task = asyncio.create_task(runner.run(), name=runner.state.stream)
        self._runners[task] = runner
        return task

    async def _follow_cutover(self) -> None:
        """Run each LowDB file's forward stream while the file is the truth, its reverse path while PG is,
        nothing once retired; read the cutover clients' reports; return orphaned handovers."""
        now = time.monotonic()
        if now - self._last_cutover_check < CUTOVER_POLL_SECONDS:
            return
        self._last_cutover_check = now
        assert self._pool is not None
        assert self._housekeeping is not None
        names = [e.name for e in self.config.lowdb]
        try:
            async with self._pool.acquire() as conn:
                modes = await cutover.modes(conn, names)
                for name in [n for n, m in modes.items() if m in cutover.HANDOVER_MODES]:
                    if await handover.recover_orphan(conn, name, f"syncd:{self._instance}"):
                        modes = await cutover.modes(conn, names)
                self._clients = await clients.reports(conn, names)
        except PG_ERRORS as exc:
            log.warning("could not read cutover modes; files keep their current mode", error=str(exc))
            return
        clients.record_metrics(self._clients)
        for entry in self.config.lowdb:
            running = self._files.get(entry.name)
            if running is None or _stream_kind(running[0]) != _stream_kind(modes[entry.name]):
                await self._run_file(entry, modes[entry.name])
            else:
                self._files[entry.name] = (modes[entry.name], running[1])
        self._housekeeping.tick(modes)
        if not self._streams_started:
            self._streams_started = True
            self._notifier.notify(STATUS=f"leader (epoch {self._leadership.epoch}): {len(self._runners)} streams")

    async def _run_file(self, entry: LowdbSettings, mode: cutover.Mode) -> None:
        _, task = self._files.pop(entry.name, (None, None))
        if task is not None and task in self._runners:
            await self._runners.pop(task).stop(task, self.config.daemon.stop_timeout)
        metrics.forget_stream(entry.name)
        assert self._pool is not None
        assert self._sink is not None
        runner: Runner | None = None
        if mode in cutover.FORWARD_MODES:
            runner = StreamRunner(LowdbSource(entry, pool=self._pool), self._sink)
        elif mode in cutover.REVERSE_MODES:
            runner = ReverseSync(entry, self._pool)
        self._files[entry.name] = (mode, self._launch(runner) if runner is not None else None)
        log.info("lowdb file running in its cutover mode", stream=entry.name, mode=mode)

    async def _check_leadership(self) -> None:
        now = time.monotonic()
        if now - self._last_leader_check < self.config.daemon.standby_poll:
            return
        self._last_leader_check = now
        if not await self._leadership.alive():
            await self._step_down("leader lock connection lost")

    async def _reap_streams(self) -> None:
        # t.result() semantics: a stream's error surfaces here, where the daemon can act on it.
        for task in [t for t in self._runners if t.done()]:
            runner = self._runners.pop(task)
            exc = task.exception() if not task.cancelled() else None
            if isinstance(exc, Fenced):
                await self._step_down(str(exc))
                return
            if isinstance(exc, ModeChanged):
                # The next cutover check starts the file in its new mode.
                self._files.pop(runner.state.stream, None)
                log.info("stream left its mode", stream=runner.state.stream, reason=str(exc))
                continue
            if exc is not None:
                log.error("stream failed", stream=runner.state.stream, error=repr(exc))
                raise exc
            log.info("stream finished", stream=runner.state.stream)

    async def _step_down(self, reason: str) -> None:
        log.warning("stepping down to standby", reason=reason)
        await self._stop_streams()
        await self._leadership.release()
        self._notifier.notify(STATUS=f"standby: {reason}")

    async def _stop_streams(self) -> None:
        runners, self._runners = self._runners, {}
        self._files.clear()
        self._streams_started = False
        if self._housekeeping is not None:
            await self._housekeeping.close()
        await asyncio.gather(*(r.stop(t, self.config.daemon.stop_timeout) for t, r in runners.items()))
        for runner in runners.values():
            metrics.forget_stream(runner.state.stream)

    def _ping_watchdog(self) -> None:
        usec = self.config.daemon.watchdog_usec
        if usec and self.last_tick - self._last_watchdog >= usec / 2e6:
            self._last_watchdog = self.last_tick
            self._notifier.notify(WATCHDOG=1)

    # -- what the ops endpoint reads ----------------------------------------------------------

    def is_leader(self) -> bool:
        """True while this instance holds the leader lock."""
        return self._leadership.is_leader

    def streams_caught_up(self) -> bool:
        """True once the streams are running and each has applied its initial snapshot."""
        return self._streams_started and all(r.state.caught_up for r in self._runners.values())

    async def pg_reachable(self) -> bool:
        """True when the pool answers `SELECT 1` within a second."""
        if self._pool is None:
            return False
        try:
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), 1.0)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    def status(self) -> Mapping[str, Any]:
        """The /status document: instance role and per-stream state."""
        return {
            "instance": self._instance,
            "leader": self.is_leader(),
            "epoch": self._leadership.epoch,
            "streams": {r.state.stream: r.state.as_json() for r in self._runners.values()},
            "cutover": {name: mode for name, (mode, _) in self._files.items()},
            "clients": {name: [c.as_json() for c in found] for name, found in self._clients.items()},
        }

    def _summary(self) -> dict[str, Any]:
        rows = {"insert": 0, "update": 0, "delete": 0}
        for runner in self._runners.values():
            for op, n in runner.state.rows.items():
                rows[op] += n
        return {"rows": rows}

    # -- signals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install handlers that only set flags; restore the previous ones on exit."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: exit gracefully. Second: force exit."""
        if self.should_exit:
            self.force_exit = True
            raise SystemExit(128 + sig)
        self.should_exit = True


def _stream_kind(mode: cutover.Mode) -> str:
    """Which of a file's streams runs in `mode`: a handover keeps the stream of the mode it left."""
    if mode in cutover.FORWARD_MODES:
        return "forward"
    return "reverse" if mode in cutover.REVERSE_MODES else "none"


async def _close_pool(pool: asyncpg.Pool, timeout: float) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (Exception, asyncio.CancelledError):
        pool.terminate()
        raise
