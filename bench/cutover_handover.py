"""Cutover scenario: what a handover costs a Node service's requests, and whether the drill's load is served.

The Workspace-shaped Express service of the drill (tests/e2e/node/workspace-service) runs through
the cutover client beside a `syncd run` daemon, once with its node-postgres storage client and once
with its Prisma 7 one, each on a fresh database and file of its own; the drill's load process
(tests/e2e/cutover_load.py) offers mixed requests open loop at the drill's RATE. Each round is one
promote and one rollback under that load, with a steady stretch before, between and after; the two
clients' rounds are interleaved (bench/harness.py).

The value is the p99 of the requests sent while a `syncd cutover` command ran (until the client
followed) minus the p99 of the steady requests (those sent more than half a second away from any
handover). Beside it: both p99s, the requests/s served over the whole round, how late the steady
requests were sent (the load's schedule lag: near zero when the machine keeps up), the handover
time the command printed, and where the time went: the share of one CPU the service, the daemon and
the load process each used over the round. bench/results.py judges the rate served.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.harness import Bench, Sample, fresh_database
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.prisma import generate, prisma_env, prisma_project
from tests.e2e.test_cutover_client_drill import HANDOVER_TIMEOUT, HOLD_BOUND_MS, RATE
from tests.e2e.test_cutover_drill import syncd
from tests.e2e.workspace_service import Load, Service

SECTION = "cutover"
SCENARIO = "handover under load"
STEADY_SECONDS = 1.5
"""Load before, between and after the handovers (a bench may wait on the clock; tests never do)."""
MARGIN_SECONDS = 0.5
"""A request this close to a handover window counts as neither steady nor in the handover."""
STORAGES = {"node-postgres client": "pg", "Prisma 7 client": "prisma"}


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process and its descendants used so far; 0 once gone."""
    if pid is None:
        return 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class CpuShare:
    """Where the time goes: each named process's share of one CPU between `__init__` and `shares()`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = pids
        self._start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._wall = time.monotonic()

    def shares(self) -> dict[str, float]:
        """Percent of one CPU per process since the start (the load process must still run)."""
        wall = time.monotonic() - self._wall
        return {f"{name}_cpu_pct": 100 * (cpu_seconds(pid) - self._start[name]) / wall
                for name, pid in self._pids.items()}


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


@dataclass(frozen=True)
class Rig:
    """One service (one storage client) through the cutover client, its daemon, database and file."""

    root: Path
    dsn: str
    service: Service
    daemon: DaemonProcess
    config: Path

    async def client_in(self, mode: str, timeout: float = 30.0) -> None:
        """Wait until the service's cutover client routes by `mode`."""
        deadline = time.monotonic() + timeout
        while (await self.service.health())["mode"] != mode:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cutover client did not follow to {mode}:\n{self.service.output()[-2000:]}")
            await asyncio.sleep(0.02)

    async def round(self) -> Sample:
        """One promote and one rollback under the load."""
        load = Load(self.service.url, RATE, self.root / "load.json")
        windows: list[tuple[float, float]] = []
        handover_ms: list[float] = []
        service, daemon = self.service.proc, self.daemon.proc
        cpu = CpuShare({"service": service.pid if service else None, "daemon": daemon.pid if daemon else None,
                        "load": load.proc.pid})
        try:
            await asyncio.sleep(STEADY_SECONDS)
            for command, mode in (("promote", "pg-primary"), ("rollback", "mirror")):
                started = time.time()
                done = await syncd("cutover", command, "workspace", "--handover-timeout", HANDOVER_TIMEOUT,
                                   dsn=self.dsn, config=self.config)
                if done.returncode != 0:
                    raise RuntimeError(f"{command} failed: {done.stderr}")
                await self.client_in(mode)
                windows.append((started, time.time()))
                if found := re.search(r"handover (\d+) ms", done.stdout):
                    handover_ms.append(float(found.group(1)))
                await asyncio.sleep(STEADY_SECONDS)
            shares = cpu.shares()
            report = await load.stop()
        finally:
            load.kill()
        if report["failures"]:
            raise RuntimeError(f"{len(report['failures'])} failed requests: {report['failures'][:3]}")
        return _sample(report, windows, handover_ms, shares)


def _sample(report: dict[str, Any], windows: list[tuple[float, float]], handover_ms: list[float],
            shares: dict[str, float]) -> Sample:
    requests = report["latencies"]
    during = [r for r in requests if any(a <= r[0] <= b for a, b in windows)]
    steady = [r for r in requests if not any(a - MARGIN_SECONDS <= r[0] <= b + MARGIN_SECONDS for a, b in windows)]
    steady_p99, during_p99 = p99([r[1] * 1000 for r in steady]), p99([r[1] * 1000 for r in during])
    return Sample(during_p99 - steady_p99, {
        "steady_p99_ms": steady_p99,
        "handover_p99_ms": during_p99,
        "served_per_s": report["requests"] / report["loading"],
        "steady_lag_p99_ms": p99([r[3] * 1000 for r in steady]),
        "handover_ms": max(handover_ms, default=0.0),
        "requests_in_handover": float(len(during)),
        **shares,
    })


@asynccontextmanager
async def rig(server_dsn: str, storage: str) -> AsyncIterator[Rig]:
    """A service on `storage` (pg | prisma) with its daemon, in mirror, on a database of its own."""
    async with fresh_database(server_dsn) as dsn:
        with tempfile.TemporaryDirectory(prefix=f"syncd-bench-cutover-{storage}-") as tmp:
            root = Path(tmp)
            path = root / "library.json"
            config = write_config(
                root / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
            )
            env = {"DB_PATH": str(path), "DATABASE_URL": dsn, "STORAGE": storage, "HOLD_BOUND_MS": HOLD_BOUND_MS}
            if storage == "prisma":
                client = await asyncio.to_thread(generate, prisma_project(root), prisma_env(root, dsn))
                env["PRISMA_CLIENT"] = str(client)
            service = await Service(root, env).start()
            daemon = DaemonProcess(config, dsn).start()
            try:
                await daemon.leading()
                one = Rig(root, dsn, service, daemon, config)
                await one.client_in("mirror")
                yield one
            finally:
                service.stop()
                daemon.stop()


async def run(bench: Bench) -> None:
    """One line per storage client: the p99 a handover adds (ms), the rate served and the lag beside it."""
    async with AsyncExitStack() as stack:
        rigs = {name: await stack.enter_async_context(rig(bench.dsn, storage)) for name, storage in STORAGES.items()}
        note = f"{RATE:.0f} requests/s offered open loop; promote + rollback per round"
        await bench.interleave(SECTION, SCENARIO, {name: r.round for name, r in rigs.items()}, unit="ms", n=2,
                               notes=dict.fromkeys(rigs, note), warmup=not bench.quick)
