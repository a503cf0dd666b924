"""The real daemon process: readiness, graceful SIGTERM, leader failover."""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg

from syncd.leader import LOCK_KEY
from tests.e2e.daemon import DaemonProcess, write_config


async def lock_is_free(dsn: str) -> bool:
    """True if another session can take the leader lock right now."""
    conn = await asyncpg.connect(dsn)
    try:
        got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY))
        if got:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        return got
    finally:
        await conn.close()


async def test_ready_then_sigterm_exits_zero_and_releases_the_lock(dsn: str, tmp_path: Path) -> None:
    """A leader becomes ready, and SIGTERM ends it with exit 0 and the lock released."""
    daemon = DaemonProcess(write_config(tmp_path / "syncd.toml"), dsn).start()
    try:
        await daemon.leading()
        status, body = await daemon.get("/status")
        assert status == 200
        assert body["leader"] is True
        assert not await lock_is_free(dsn)
        assert (await daemon.get("/healthz"))[0] == 200
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert await lock_is_free(dsn)
    assert '"event": "stopped"' in daemon.output()


async def test_standby_takes_over_when_the_leader_is_killed(dsn: str, tmp_path: Path) -> None:
    """kill -9 of the leader: the standby leads within 10 s with a higher fencing epoch."""
    config = write_config(tmp_path / "syncd.toml")
    leader = DaemonProcess(config, dsn, instance="a").start()
    standby = DaemonProcess(config, dsn, instance="b")
    try:
        await leader.leading()
        standby.start()
        await standby.ready()
        assert (await standby.get("/status"))[1]["leader"] is False
        epoch = (await leader.get("/status"))[1]["epoch"]

        leader.signal(signal.SIGKILL)
        leader.wait(5)

        async def standby_leads() -> bool:
            return (await standby.get("/status"))[1]["leader"] is True

        assert await standby.until(standby_leads, 10, "standby to take over") < 10
        assert (await standby.get("/status"))[1]["epoch"] > epoch
    finally:
        standby.stop()
        leader.stop()
