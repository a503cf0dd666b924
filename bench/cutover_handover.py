"""Cutover scenario: the latency a handover adds to a Node service's requests, through the cutover client.

The Workspace-shaped Express service of the drill (tests/e2e/node/workspace-service, node-postgres
storage) runs through the cutover client beside a `syncd run` daemon on a fresh database; the drill's
load process (tests/e2e/cutover_load.py) offers mixed requests at RATE per second. Each round is one
promote and one rollback under that load, with a steady stretch before and after each. The value is
the p99 of the requests in flight during a handover (started while a `syncd cutover` command ran)
minus the p99 of the steady requests; the round also keeps the steady p99, the handover p99, the
requests per second served and the handover time the command printed.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path

from bench.harness import Bench, Sample, fresh_database
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.test_cutover_drill import syncd
from tests.e2e.workspace_service import Load, Service

SECTION = "cutover"
RATE = 200.0
STEADY_SECONDS = 3.0
"""Load before and after each handover (a bench may wait on the clock; tests never do)."""


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def _client_in(service: Service, mode: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await service.health())["mode"] != mode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cutover client did not follow to {mode}:\n{service.output()[-2000:]}")
        await asyncio.sleep(0.02)


async def _round(dsn: str, config: Path, service: Service, out: Path) -> Sample:
    """One promote and one rollback under load."""
    load = Load(service.url, RATE, out)
    windows: list[tuple[float, float]] = []
    handover_ms: list[float] = []
    try:
        await asyncio.sleep(STEADY_SECONDS)
        for command, mode in (("promote", "pg-primary"), ("rollback", "mirror")):
            started = time.time()
            done = await syncd("cutover", command, "workspace", dsn=dsn, config=config)
            if done.returncode != 0:
                raise RuntimeError(f"{command} failed: {done.stderr}")
            await _client_in(service, mode)
            windows.append((started, time.time()))
            if found := re.search(r"handover (\d+) ms", done.stdout):
                handover_ms.append(float(found.group(1)))
            await asyncio.sleep(STEADY_SECONDS)
        report = await load.stop()
    finally:
        load.kill()
    if report["failures"]:
        raise RuntimeError(f"{len(report['failures'])} failed requests: {report['failures'][:3]}")
    during = [d * 1000 for s, d, _ in report["latencies"] if any(a <= s <= b for a, b in windows)]
    steady = [d * 1000 for s, d, _ in report["latencies"] if not any(a - 1 <= s <= b + 1 for a, b in windows)]
    served = report["requests"] / (report["stopped"] - report["started"])
    return Sample(
        p99(during) - p99(steady),
        {"steady_p99_ms": p99(steady), "handover_p99_ms": p99(during), "served_per_s": served,
         "handover_ms": max(handover_ms, default=0.0), "requests_in_handover": float(len(during))},
    )


async def run(bench: Bench) -> None:
    """One line: the p99 a handover adds (ms), with the steady and handover p99s beside it."""
    async with fresh_database(bench.dsn) as dsn:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-cutover-") as tmp:
            root = Path(tmp)
            path = root / "library.json"
            config = write_config(
                root / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
            )
            service = await Service(root, {"DB_PATH": str(path), "DATABASE_URL": dsn, "STORAGE": "pg"}).start()
            daemon = DaemonProcess(config, dsn).start()
            try:
                await daemon.leading()
                await _client_in(service, "mirror")

                async def cycle() -> Sample:
                    return await _round(dsn, config, service, root / "load.json")

                await bench.repeat(SECTION, "handover under load (node-postgres client)", "p99 added", cycle,
                                   unit="ms", n=2, note=f"{RATE:.0f} requests/s offered, promote + rollback",
                                   warmup=not bench.quick)
            finally:
                service.stop()
                daemon.stop()
