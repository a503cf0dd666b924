"""The Daemon object on real PostgreSQL and a real HTTP port, driven tick by tick."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from syncd.config import Config
from syncd.daemon import TICK_SECONDS, Daemon


async def readyz(port: int | None) -> tuple[int, dict[str, object]]:
    """GET /readyz: status and body."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


async def test_not_ready_before_the_role_is_known(dsn: str) -> None:
    """PostgreSQL answers, but until a lock attempt has, the role is unknown and /readyz is 503."""
    config = Config.load(None, {"SYNCD_PG_DSN": dsn, "SYNCD_HTTP_LISTEN": "127.0.0.1:0"})
    daemon = Daemon(config)
    await daemon.startup()
    try:
        port = daemon._http.port
        status, body = await readyz(port)
        assert (status, body["postgres"], body["role"]) == (503, True, "unknown")
        deadline = time.monotonic() + 10
        while (await readyz(port))[0] != 200 and time.monotonic() < deadline:
            await asyncio.sleep(TICK_SECONDS)
            await daemon.on_tick()
        status, body = await readyz(port)
        assert (status, body["role"]) == (200, "leader")
    finally:
        await daemon.shutdown()
