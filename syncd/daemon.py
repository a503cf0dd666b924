"""The daemon's lifecycle, shaped like uvicorn's Server.serve(): startup, main loop, shutdown.

Startup binds the ops endpoint and opens the pool; the main loop ticks, joins the instances
sharing the streams, runs the streams whose leases it holds (syncd.ownership decides which) and
reaps their results; shutdown stops the streams, lets the batch in flight commit or roll back within
`daemon.stop_timeout`, gives the leases back, closes the pool and the endpoint last.
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

from syncd import explain as provenance
from syncd import metrics
from syncd.config import Config, LowdbSettings
from syncd.cutover import clients, handover
from syncd.cutover import state as cutover
from syncd.cutover.housekeeping import Housekeeping
from syncd.cutover.reverse import ReverseSync
from syncd.database import create_pool
from syncd.errors import Fenced, ModeChanged, SinkUnavailable
from syncd.http import OpsServer
from syncd.lowdb.source import LowdbSource
from syncd.ownership import Ownership
from syncd.registry import build_questdb_stream, stream_names
from syncd.relay import STREAM as RELAY_STREAM
from syncd.relay import KafkaRelay
from syncd.sink.postgres import PostgresSink
from syncd.stream import Runner, StreamRunner
from syncd.systemd import Notifier

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.1
CUTOVER_POLL_SECONDS = 0.5
"""How often an owner re-reads syncd.cutover to run each of its LowDB files in its mode."""
PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Daemon:
    """One syncd process: runs the streams it holds leases for (all of them when alone), serving the
    ops endpoint either way."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.should_exit = False
        self.force_exit = False
        self.last_tick = time.monotonic()
        self._notifier = Notifier(config.daemon.notify_socket)
        self._instance = config.daemon.instance or f"{socket.gethostname()}:{id(self):x}"
        self._ownership = Ownership(config.postgres.dsn.get_secret_value(), self._instance)
        self._streams = stream_names(config)
        metrics.STREAMS_CONFIGURED.set(len(self._streams))
        self._pool: asyncpg.Pool | None = None
        self._http = OpsServer(self, config.http.host, config.http.port)
        self._join: asyncio.Task[None] | None = None
        self._runners: dict[asyncio.Task[None], Runner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """Per owned QuestDB stream or relay: the task running it (LowDB files are in `_files`)."""
        self._files: dict[str, tuple[cutover.Mode, asyncio.Task[None] | None]] = {}
        """Per LowDB file: the mode it runs in and the task running it (none once retired)."""
        self._clients: dict[str, list[clients.ClientReport]] = {}
        """Per LowDB file: its cutover clients, as last read from the registry."""
        self._housekeeping: Housekeeping | None = None
        self._streams_started = False
        self._last_cutover_check = 0.0
        self._last_watchdog = 0.0
        self._last_rebalance = 0.0
        self._status = ""
        """The STATUS last told to systemd."""

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
        self._notifier.notify(READY=1, STATUS="standby: joining")

    async def main_loop(self) -> None:
        """Tick until told to exit: heartbeat, leadership, stream reaping."""
        while not self.should_exit:
            await asyncio.sleep(TICK_SECONDS)
            await self.on_tick()

    async def on_tick(self) -> None:
        """One heartbeat: watchdog ping, membership, stream leases, reaping finished streams."""
        self.last_tick = time.monotonic()
        self._ping_watchdog()
        if self._join is None and not self._ownership.joined:
            self._join = asyncio.create_task(self._ownership.join(self.config.daemon.standby_poll))
        elif self._join is not None and self._join.done():
            self._join.result()
            self._join = None
            self._joined()
        if self._join is None and self._ownership.joined:
            await self._rebalance()
            await self._follow_cutover()
            await self._reap_streams()

    async def shutdown(self) -> None:
        """Stop sources, settle the batch in flight, release the lock, close pool, endpoint last."""
        self._notifier.notify(STOPPING=1, STATUS="stopping")
        log.info("shutting down", streams=len(self._runners))
        summary = self._summary()
        await self._stop_streams()
        if self._join is not None:
            self._join.cancel()
            await asyncio.gather(self._join, return_exceptions=True)
        await self._ownership.leave()
        if self._pool is not None:
            await _close_pool(self._pool, self.config.daemon.stop_timeout)
        await self._http.stop()
        log.info("stopped", **summary)

    # -- stream leases and streams ------------------------------------------------------------

    def _joined(self) -> None:
        assert self._pool is not None
        self._housekeeping = Housekeeping(self._pool, self.config.lowdb, self.config.daemon.verify_interval)
        self._last_cutover_check = self._last_rebalance = 0.0
        self._notifier.notify(STATUS="member: taking stream leases")

    async def _rebalance(self) -> None:
        """Hand over the streams the assignment gives to others, take the free ones it gives to us."""
        now = time.monotonic()
        if now - self._last_rebalance < self.config.daemon.standby_poll:
            return
        self._last_rebalance = now
        if not await self._ownership.alive():
            await self._step_down("lease connection lost")
            return
        try:
            plan = await self._ownership.plan(self._streams)
            for stream in sorted(plan.release):
                await self._stop_stream(stream)
                await self._ownership.release(stream)
            for stream in sorted(plan.acquire):
                epoch = await self._ownership.acquire(stream)
                if epoch is not None:
                    self._start_stream(stream, epoch)
        except PG_ERRORS as exc:
            log.warning("rebalance failed; the next one retries", error=str(exc))
            return
        if plan.release or plan.acquire:
            self._streams_started = False  # ready again once the new streams caught up
            self._last_cutover_check = 0.0
        role = "leader" if self.is_leader() else "standby"
        status = f"{role} of {len(self._ownership.epochs)} streams, {len(plan.members)} members"
        if status != self._status:
            self._status = status
            self._notifier.notify(STATUS=status)

    def _start_stream(self, stream: str, epoch: int) -> None:
        """A QuestDB stream or the relay starts now; a LowDB file at the next cutover check."""
        assert self._pool is not None
        if stream == RELAY_STREAM and self.config.kafka is not None:
            self._tasks[stream] = self._launch(KafkaRelay(self.config.kafka, self._pool))
            return
        if stream not in {entry.name for entry in self.config.lowdb}:
            source = build_questdb_stream(self.config, stream)
            self._tasks[stream] = self._launch(StreamRunner(source, PostgresSink(self._pool, epoch, lease=stream)))

    async def _stop_stream(self, stream: str) -> None:
        """Stop one stream (its batch in flight commits or rolls back) before its lease is given back."""
        task = self._tasks.pop(stream, None)
        if stream in self._files:
            task = self._files.pop(stream)[1]
        if task is not None and task in self._runners:
            await self._runners.pop(task).stop(task, self.config.daemon.stop_timeout)
        metrics.forget_stream(stream)

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
                orphans = [n for n, m in modes.items() if m in cutover.HANDOVER_MODES and n in self._ownership.epochs]
                for name in orphans:
                    if await handover.recover_orphan(conn, name, f"syncd:{self._instance}"):
                        modes = await cutover.modes(conn, names)
                self._clients = await clients.reports(conn, names)
        except PG_ERRORS as exc:
            log.warning("could not read cutover modes; files keep their current mode", error=str(exc))
            return
        clients.record_metrics(self._clients)
        owned = [entry for entry in self.config.lowdb if entry.name in self._ownership.epochs]
        for entry in owned:
            running = self._files.get(entry.name)
            if running is None or _stream_kind(running[0]) != _stream_kind(modes[entry.name]):
                await self._run_file(entry, modes[entry.name])
            else:
                self._files[entry.name] = (modes[entry.name], running[1])
        self._housekeeping.tick({entry.name: modes[entry.name] for entry in owned})
        self._streams_started = True

    async def _run_file(self, entry: LowdbSettings, mode: cutover.Mode) -> None:
        _, task = self._files.pop(entry.name, (None, None))
        if task is not None and task in self._runners:
            await self._runners.pop(task).stop(task, self.config.daemon.stop_timeout)
        metrics.forget_stream(entry.name)
        assert self._pool is not None
        runner: Runner | None = None
        if mode in cutover.FORWARD_MODES:
            sink = PostgresSink(self._pool, self._ownership.epochs[entry.name], lease=entry.name)
            runner = StreamRunner(LowdbSource(entry, pool=self._pool), sink)
        elif mode in cutover.REVERSE_MODES:
            runner = ReverseSync(entry, self._pool)
        self._files[entry.name] = (mode, self._launch(runner) if runner is not None else None)
        log.info("lowdb file running in its cutover mode", stream=entry.name, mode=mode)

    async def _reap_streams(self) -> None:
        # t.result() semantics: a stream's error surfaces here, where the daemon can act on it.
        for task in [t for t in self._runners if t.done()]:
            runner = self._runners.pop(task)
            exc = task.exception() if not task.cancelled() else None
            if isinstance(exc, Fenced):
                # Another instance took this stream's lease: give ours up, the others keep running.
                log.warning("stream fenced; releasing its lease", stream=runner.state.stream, reason=str(exc))
                await self._stop_stream(runner.state.stream)
                await self._ownership.release(runner.state.stream)
                continue
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
        await self._ownership.leave()
        self._notifier.notify(STATUS=f"standby: {reason}")

    async def _stop_streams(self) -> None:
        runners, self._runners = self._runners, {}
        self._files.clear()
        self._tasks.clear()
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
        """True while this instance holds at least one stream lease (or, with no streams, is a member)."""
        return self._ownership.joined and (bool(self._ownership.epochs) or not self._streams)

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
            "epoch": max(self._ownership.epochs.values(), default=None),
            "members": list(self._ownership.members),
            "owned": sorted(self._ownership.epochs),
            "owners": self._ownership.owners_json(),
            "streams": {r.state.stream: r.state.as_json() for r in self._runners.values()},
            "cutover": {name: mode for name, (mode, _) in self._files.items()},
            "clients": {name: [c.as_json() for c in found] for name, found in self._clients.items()},
        }

    async def explain(self, table: str, key: str) -> Mapping[str, Any]:
        """`GET /explain/<table>/<key>`: the row's provenance, read on the pool (any role, read-only)."""
        target = provenance.resolve(self.config, table)
        if self._pool is None:
            raise SinkUnavailable("PostgreSQL not connected yet")
        async with self._pool.acquire() as conn:
            return (await provenance.explain(conn, target, key)).to_json()

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
