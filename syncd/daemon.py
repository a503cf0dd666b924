"""The daemon's lifecycle, shaped like uvicorn's Server.serve(): startup, main loop, shutdown.

Startup checks the config, binds the ops endpoint and makes the pool (connecting lazily, so
PostgreSQL may be down); the main loop ticks, joins the instances sharing the streams, and runs the
streams whose leases it holds (syncd.ownership decides which) under the supervisor, which reaps,
restarts and watches them; shutdown stops the streams, lets the batch in flight commit or roll back
within `daemon.stop_timeout`, gives the leases back, closes the pool and the endpoint last. Nothing
but a bad config at start or a signal ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
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
from syncd.database import PG_ERRORS, borrowed, connect, create_pool
from syncd.errors import CannotListen, SinkUnavailable
from syncd.http import OpsServer
from syncd.lowdb.source import LowdbSource
from syncd.ownership import Ownership
from syncd.registry import build_questdb_stream, check_lowdb_targets, stream_names
from syncd.relay import STREAM as RELAY_STREAM
from syncd.relay import KafkaRelay
from syncd.sink.postgres import PostgresSink
from syncd.source import Source
from syncd.stream import LoadReport, Runner, StreamRunner
from syncd.supervisor import Supervisor
from syncd.systemd import Notifier

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.1
CUTOVER_POLL_SECONDS = 0.5
"""How often an owner re-reads syncd.cutover to run each of its LowDB files in its mode."""
PROBE_SECONDS = 1.0
"""Bound of the readiness probe's `SELECT 1` (and of getting a connection for it)."""
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONFIG_REFUSALS = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
"""What PostgreSQL answers to a wrong user, password or database: a bad config, not an outage."""


class Daemon:
    """One syncd process: runs the streams it holds leases for (all of them when alone), serving the
    ops endpoint either way."""

    def __init__(self, config: Config, *, on_load: LoadReport | None = None) -> None:
        """`on_load` is told each stream's initial-load summary (`syncd run` prints it on a terminal)."""
        self.config = config
        self._on_load = on_load
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
        self._supervisor = Supervisor(
            stop_timeout=config.daemon.stop_timeout,
            stall_timeout=config.daemon.stall_timeout,
            backoff_max=config.daemon.restart_backoff_max,
        )
        """Runs every stream this instance owns (QuestDB tables, the relay, LowDB files)."""
        self._files: dict[str, cutover.Mode] = {}
        """Per owned LowDB file: the mode it runs in (a retired file has no stream)."""
        self._clients: dict[str, list[clients.ClientReport]] = {}
        """Per LowDB file: its cutover clients, as last read from the registry."""
        self._housekeeping: Housekeeping | None = None
        self._streams_started = False
        self._rebalanced = False
        """True once a rebalance ran since joining: the role (which leases are ours) is known."""
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
        """Check the config, open the endpoint and make the pool; leases are sought from the main loop.

        Raises ConfigError, CannotListen or a refusal of the credentials: the only failures that end
        the process. PostgreSQL down is not one of them."""
        check_lowdb_targets(self.config)
        try:
            await self._http.start()
        except OSError as exc:
            raise CannotListen(self.config.http.listen, exc.strerror or str(exc)) from None
        try:
            await self._probe_postgres()
        except BaseException:
            await self._http.stop()
            raise
        # The pool connects lazily: PostgreSQL down at start means "not ready", never an exit.
        self._pool = await create_pool(self.config.postgres, min_size=0)
        log.info("syncd started", http=f"http://{self.config.http.host}:{self._http.port}", instance=self._instance)
        self._notifier.notify(READY=1, STATUS="standby: joining")

    async def _probe_postgres(self) -> None:
        """Credentials and database name are config: wrong ones end the start. PostgreSQL down does not."""
        timeout = self.config.postgres.connect_timeout
        try:
            conn = await connect(self.config.postgres.dsn.get_secret_value(), timeout=timeout)
        except CONFIG_REFUSALS:
            raise
        except PG_ERRORS as exc:
            log.warning("PostgreSQL unreachable at start; not ready, retrying", error=repr(exc))
            return
        await conn.close(timeout=timeout)

    async def main_loop(self) -> None:
        """Tick until told to exit: heartbeat, membership, the supervisor's round."""
        while not self.should_exit:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.on_tick()
            except Exception as exc:  # the last line of containment: a bug in one tick never ends the process
                log.exception("tick failed; the next tick carries on", error=repr(exc))

    async def on_tick(self) -> None:
        """One heartbeat: watchdog ping, membership, stream leases, the supervisor's round."""
        self.last_tick = time.monotonic()
        self._ping_watchdog()
        if not self._ownership.joined and (self._files or any(True for _ in self._supervisor.runners())):
            # The lease connection died (a restart, a killed backend): every stream of those epochs
            # stops before any lease is sought again, so none is ever fenced by its own stale stream.
            await self._step_down("lease connection lost")
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
            self._rebalanced = True

    async def shutdown(self) -> None:
        """Stop sources, settle the batch in flight, release the lock, close pool, endpoint last."""
        self._notifier.notify(STOPPING=1, STATUS="stopping")
        log.info("shutting down", streams=sum(1 for _ in self._supervisor.runners()))
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
        """A QuestDB stream or the relay starts now; a LowDB file at the next cutover check.

        The supervisor gets a factory, not a runner: a restarted stream gets a fresh source at its
        checkpoint (same lease, same epoch)."""
        pool = self._pool
        assert pool is not None
        kafka = self.config.kafka
        if stream == RELAY_STREAM and kafka is not None:
            self._supervisor.start(lambda: KafkaRelay(kafka, pool))
            return
        if stream not in {entry.name for entry in self.config.lowdb}:
            sink = self._sink(epoch, stream)
            self._supervisor.start(
                functools.partial(
                    _forward, functools.partial(build_questdb_stream, self.config, stream), sink, self._on_load
                )
            )

    def _sink(self, epoch: int, stream: str) -> PostgresSink:
        assert self._pool is not None
        return PostgresSink(self._pool, epoch, lease=stream, acquire_timeout=self.config.postgres.connect_timeout)

    async def _stop_stream(self, stream: str) -> None:
        """Stop one stream (its batch in flight commits or rolls back) before its lease is given back."""
        self._files.pop(stream, None)
        await self._supervisor.stop(stream)

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
            async with borrowed(self._pool, self.config.postgres.connect_timeout) as conn:
                modes = await cutover.modes(conn, names)
                orphans = [n for n, m in modes.items() if m in cutover.HANDOVER_MODES and n in self._ownership.epochs]
                for name in orphans:
                    if await handover.recover_orphan(conn, name, f"syncd:{self._instance}"):
                        modes = await cutover.modes(conn, names)
                self._clients = await clients.reports(conn, names)
        except PG_ERRORS as exc:
            log.warning("could not read cutover modes; files keep their current mode", error=repr(exc))
            return
        clients.record_metrics(self._clients)
        owned = [entry for entry in self.config.lowdb if entry.name in self._ownership.epochs]
        for entry in owned:
            mode, running = modes[entry.name], self._files.get(entry.name)
            # A stream the supervisor let go (it left its mode) is started again in the current one.
            gone = _stream_kind(mode) != "none" and entry.name not in self._supervisor
            if running is None or _stream_kind(running) != _stream_kind(mode) or gone:
                await self._run_file(entry, mode)
            else:
                self._files[entry.name] = mode
        self._housekeeping.tick({entry.name: modes[entry.name] for entry in owned})
        self._streams_started = True

    async def _run_file(self, entry: LowdbSettings, mode: cutover.Mode) -> None:
        await self._supervisor.stop(entry.name)
        self._files[entry.name] = mode
        factory = self._file_runner(entry, mode)
        if factory is not None:
            self._supervisor.start(factory)
        log.info("lowdb file running in its cutover mode", stream=entry.name, mode=mode)

    def _file_runner(self, entry: LowdbSettings, mode: cutover.Mode) -> Callable[[], Runner] | None:
        pool = self._pool
        assert pool is not None
        if mode in cutover.FORWARD_MODES:
            sink = self._sink(self._ownership.epochs[entry.name], entry.name)
            return lambda: StreamRunner(LowdbSource(entry, pool=pool), sink, self._on_load)
        if mode in cutover.REVERSE_MODES:
            return lambda: ReverseSync(entry, pool)
        return None

    async def _reap_streams(self) -> None:
        """The supervisor's round; a stream fenced by another instance gives its lease up, the others run on."""
        for stream, exc in await self._supervisor.tick():
            log.warning("stream fenced; releasing its lease", stream=stream, reason=str(exc))
            await self._stop_stream(stream)
            await self._ownership.release(stream)

    async def _step_down(self, reason: str) -> None:
        """Stop every stream of these epochs before anything else leads: nothing stale writes again."""
        log.warning("leadership lost; stepping down to standby", reason=reason, streams=sorted(self._ownership.epochs))
        self._rebalanced = False
        await self._stop_streams()
        await self._ownership.leave()
        self._notifier.notify(STATUS=f"standby: {reason}")

    async def _stop_streams(self) -> None:
        self._files.clear()
        self._streams_started = False
        if self._housekeeping is not None:
            await self._housekeeping.close()
        await self._supervisor.stop_all()

    def _ping_watchdog(self) -> None:
        usec = self.config.daemon.watchdog_usec
        if usec and self.last_tick - self._last_watchdog >= usec / 2e6:
            self._last_watchdog = self.last_tick
            self._notifier.notify(WATCHDOG=1)

    # -- what the ops endpoint reads ----------------------------------------------------------

    def is_leader(self) -> bool:
        """True while this instance holds at least one stream lease (or, with no streams, is a member)."""
        return self._ownership.joined and (bool(self._ownership.epochs) or not self._streams)

    def role_known(self) -> bool:
        """False until this instance has joined and taken its share of the leases: readiness waits for it."""
        return self._ownership.joined and self._rebalanced

    def streams_behind(self) -> list[str]:
        """Owned streams not caught up (failed, stalled, source down, snapshot not applied)."""
        if self._ownership.epochs and not self._streams_started:
            return ["(streams not started)"]
        return [r.state.stream for r in self._supervisor.runners() if not r.state.healthy]

    async def pg_reachable(self) -> bool:
        """True when the pool answers `SELECT 1` within a second."""
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(PROBE_SECONDS), borrowed(self._pool, PROBE_SECONDS) as conn:
                await conn.fetchval("SELECT 1")
        except PG_ERRORS:
            return False
        return True

    def status(self) -> Mapping[str, Any]:
        """The /status document: instance role and per-stream state."""
        return {
            "instance": self._instance,
            "leader": self.is_leader(),
            "role": _role(self.is_leader(), self.role_known()),
            "epoch": max(self._ownership.epochs.values(), default=None),
            "members": list(self._ownership.members),
            "owned": sorted(self._ownership.epochs),
            "owners": self._ownership.owners_json(),
            "streams": {r.state.stream: r.state.as_json() for r in self._supervisor.runners()},
            "cutover": dict(self._files),
            "clients": {name: [c.as_json() for c in found] for name, found in self._clients.items()},
        }

    async def explain(self, table: str, key: str) -> Mapping[str, Any]:
        """`GET /explain/<table>/<key>`: the row's provenance, read on the pool (any role, read-only)."""
        target = provenance.resolve(self.config, table)
        if self._pool is None:
            raise SinkUnavailable("PostgreSQL not connected yet")
        async with borrowed(self._pool, self.config.postgres.connect_timeout) as conn:
            return (await provenance.explain(conn, target, key)).to_json()

    def _summary(self) -> dict[str, Any]:
        rows = {"insert": 0, "update": 0, "delete": 0}
        restarts = 0
        for runner in self._supervisor.runners():
            restarts += runner.state.restarts
            for op, n in runner.state.rows.items():
                rows[op] += n
        return {"rows": rows, "stream_restarts": restarts}

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


def _forward(make_source: Callable[[], Source], sink: PostgresSink, on_load: LoadReport | None) -> Runner:
    return StreamRunner(make_source(), sink, on_load)


def _role(leader: bool, known: bool) -> str:
    return "leader" if leader else "standby" if known else "unknown"


async def _close_pool(pool: asyncpg.Pool, timeout: float) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("pool did not close in time; connections terminated", timeout=timeout)
        pool.terminate()
    except (Exception, asyncio.CancelledError):
        pool.terminate()
        raise
