"""Handovers that cannot complete leave every side in one mode: the database, the daemon and the
service's cutover client all in `mirror`, the service serving, nothing lost.

- A handover timing out: the service is frozen (SIGSTOP) with its session and its LowDB writers'
  lock alive, so it never stops writing LowDB; promote gives up after --handover-timeout.
- A client losing PostgreSQL mid-handover: frozen likewise, then its connection is cut by a TCP
  proxy (the lock goes with the session, but the client never said it stopped writing): promote
  aborts instead of trusting the released lock; the client, once thawed, finds PostgreSQL gone,
  keeps serving reads from LowDB, holds writes and fails them after its bound (nothing written),
  and when PostgreSQL is back it re-reads the file and writes LowDB again.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from syncd.config import LowdbSettings
from syncd.database import connect
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.test_cutover_drill import equal, syncd
from tests.e2e.test_lowdb_writers import node_modules
from tests.e2e.workspace_service import Service
from tests.tcp_proxy import TcpProxy

__all__ = ["node_modules"]

pytestmark = [
    pytest.mark.e2e,
]

HOLD_BOUND_MS = 8000
"""Long enough that the handover of the lost-client test aborts on the loss, not on its timeout."""


@dataclass
class Setup:
    """A daemon, the service (its PostgreSQL through a proxy) and the file they share."""

    daemon: DaemonProcess
    service: Service
    proxy: TcpProxy
    settings: LowdbSettings
    dsn: str

    async def mode(self) -> str:
        """The file's mode in syncd.cutover."""
        conn = await connect(self.dsn)
        try:
            mode: str = await conn.fetchval("SELECT mode FROM syncd.cutover WHERE name = 'workspace'")
            return mode
        finally:
            await conn.close()

    async def last_reason(self) -> str:
        """The newest cutover_log line: from → to: reason."""
        conn = await connect(self.dsn)
        try:
            row = await conn.fetchrow("SELECT from_mode, to_mode, reason FROM syncd.cutover_log ORDER BY id DESC")
            assert row is not None
            return f"{row['from_mode']} → {row['to_mode']}: {row['reason']}"
        finally:
            await conn.close()

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        """One request to the service."""
        async with aiohttp.ClientSession() as session, session.request(method, self.service.url + path, json=body) as r:
            return r.status, await r.json()

    async def everyone_in_mirror(self) -> None:
        """Database, daemon and client all in mirror, and the client writing LowDB again."""
        assert await self.mode() == "mirror"

        async def all_mirror() -> bool:
            health = await self.service.health()
            daemon_mode = (await self.daemon.get("/status"))[1]["cutover"].get("workspace")
            return (health["mode"], health["writes"], daemon_mode) == ("mirror", "lowdb", "mirror")

        await self.daemon.until(all_mirror, 30, "database, daemon and client in mirror")
        status, created = await self.request("POST", "/api/items", {"title": "after", "category": "feature"})
        assert status == 201, created

        async def in_sync() -> bool:
            return await equal(self.dsn, self.settings)

        await self.daemon.until(in_sync, 30, "PostgreSQL equal to the file")

    def freeze(self) -> None:
        """SIGSTOP the service: its session stays, it answers nothing."""
        assert self.service.proc is not None
        self.service.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the service."""
        assert self.service.proc is not None
        self.service.proc.send_signal(signal.SIGCONT)


def through(dsn: str, port: int) -> str:
    """`dsn` with its port replaced by the proxy's."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}"))


@pytest.fixture
async def setup(dsn: str, tmp_path: Path) -> AsyncIterator[Setup]:
    """The service in mirror with one item of its own in PostgreSQL."""
    path = tmp_path / "library.json"
    settings = LowdbSettings(name="workspace", path=path, layout="workspace")
    config = write_config(
        tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    port = urlsplit(dsn).port
    assert port is not None
    proxy = await TcpProxy(port).start()
    env = {"DB_PATH": str(path), "DATABASE_URL": through(dsn, proxy.port), "HOLD_BOUND_MS": str(HOLD_BOUND_MS)}
    service = await Service(tmp_path, {**env, "STORAGE": "pg"}).start()
    daemon = DaemonProcess(config, dsn).start()
    ready = Setup(daemon, service, proxy, settings, dsn)
    try:
        await daemon.leading()
        status, _ = await ready.request("POST", "/api/items", {"title": "before", "category": "feature"})
        assert status == 201

        async def in_sync() -> bool:
            return await equal(dsn, settings)

        await daemon.until(in_sync, 30, "PostgreSQL equal to the file")
        yield ready
    finally:
        ready.thaw()
        # In a thread: the proxy runs on this loop, and the service says goodbye through it.
        assert await asyncio.to_thread(service.stop) == 0, service.output()[-3000:]
        assert daemon.stop() == 0, daemon.output()[-3000:]
        await proxy.close()


async def test_a_handover_timing_out_leaves_every_side_in_mirror(setup: Setup) -> None:
    """A client that never lets go of the LowDB writers' lock: promote aborts after the timeout."""
    # Before: the client is seen by the metrics and by `syncd cutover status`.
    gauge = 'syncd_cutover_clients{file="workspace",mode="mirror"} 1.0'

    async def counted() -> bool:
        return gauge in (await setup.daemon.get("/metrics"))[1]

    await setup.daemon.until(counted, 10, "the client in the metrics")
    listed = await syncd("cutover", "status", "workspace", dsn=setup.dsn, config=setup.daemon.config)
    assert listed.returncode == 0, listed.stderr
    assert "workspace-api@" in listed.stdout, listed.stdout

    setup.freeze()
    done = await syncd("cutover", "promote", "workspace", "--handover-timeout", "1s", dsn=setup.dsn,
                       config=setup.daemon.config)
    assert done.returncode == 1, done.stderr
    assert "handover aborted, back in mirror: clients still writing lowdb after 1 s: workspace-api@" in done.stderr
    assert (await setup.last_reason()).startswith("switching → mirror: handover 1 aborted: clients still writing")
    setup.thaw()
    await setup.everyone_in_mirror()

    # Nothing is left behind: the next promote goes through.
    done = await syncd("cutover", "promote", "workspace", dsn=setup.dsn, config=setup.daemon.config)
    assert done.returncode == 0, done.stderr


async def test_a_client_losing_postgresql_mid_handover_leaves_every_side_in_mirror(setup: Setup) -> None:
    """The lock is released by the lost session, not by the client: promote aborts; the client holds writes."""
    setup.freeze()
    promote = asyncio.create_task(
        syncd("cutover", "promote", "workspace", "--handover-timeout", "20s", dsn=setup.dsn, config=setup.daemon.config)
    )

    async def switching() -> bool:
        return await setup.mode() == "switching"

    await setup.daemon.until(switching, 20, "promote in its handover")
    await setup.proxy.cut()
    done = await promote
    assert done.returncode == 1, done.stderr
    assert "lost PostgreSQL mid-handover before it stopped writing" in done.stderr
    assert await setup.mode() == "mirror"

    setup.thaw()

    async def offline() -> bool:
        return (await setup.service.health())["postgres"] is False

    await setup.daemon.until(offline, 20, "the client noticing PostgreSQL is gone")
    status, listed = await setup.request("GET", "/api/items")
    assert status == 200
    assert [i["title"] for i in listed["data"]] == ["before"]  # type: ignore[union-attr]
    status, refused = await setup.request("POST", "/api/items", {"title": "while offline", "category": "feature"})
    assert status == 503, refused  # held for the bound, then failed: written nowhere
    assert "while offline" not in setup.settings.path.read_text()

    setup.proxy.restore()
    await setup.everyone_in_mirror()
