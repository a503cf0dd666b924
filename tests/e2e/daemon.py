"""Run the real `syncd run` as a subprocess and wait on its endpoints, with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from syncd.cluster import free_port

SYNCD = Path(sys.executable).with_name("syncd")


class DaemonProcess:
    """A syncd process on a free port; `stop()` sends SIGTERM, `kill()` SIGKILL."""

    def __init__(self, config: Path, dsn: str, *, instance: str = "test", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.config = config
        self.env = {
            **os.environ,
            "SYNCD_PG_DSN": dsn,
            "SYNCD_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "SYNCD_DAEMON_INSTANCE": instance,
            "SYNCD_DAEMON_STANDBY_POLL": "200ms",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(f".{instance}.log")

    @property
    def url(self) -> str:
        """Base URL of the ops endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DaemonProcess:
        """Spawn `syncd run --config …` with its stderr going to a log file."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(SYNCD), "run", "--config", str(self.config)], env=self.env, stdout=log, stderr=log
            )
        return self

    def signal(self, sig: int) -> None:
        """Send `sig` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Exit code, waiting at most `timeout` seconds."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; kill if it overstays (the test then fails on the exit code)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def output(self) -> str:
        """Everything the daemon logged so far."""
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The daemon's log as parsed JSON lines; a line that is not JSON fails the test, named."""
        events = []
        for n, line in enumerate(self.output().splitlines(), 1):
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                raise AssertionError(f"log line {n} is not JSON: {line!r}") from None
        return events

    async def get(self, path: str) -> tuple[int, Any]:
        """GET `path`; (status, parsed JSON or text). Connection errors give (0, error)."""
        timeout = aiohttp.ClientTimeout(total=3)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url + path) as response:
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()
        except aiohttp.ClientError as exc:
            return 0, str(exc)

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
        """Poll `check` until true; seconds it took. Fails with the daemon's log on timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}")
            if await check():
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{self.output()[-4000:]}")

    async def ready(self, timeout: float = 30.0) -> float:
        """Wait for /readyz 200."""

        async def check() -> bool:
            return (await self.get("/readyz"))[0] == 200

        return await self.until(check, timeout, "/readyz 200")

    async def leader(self, timeout: float = 30.0) -> float:
        """Wait until this instance leads, ready or not (a missing file keeps a stream behind)."""

        async def check() -> bool:
            status, body = await self.get("/status")
            return status == 200 and body["leader"] is True

        return await self.until(check, timeout, "leader")

    async def leading(self, timeout: float = 30.0) -> float:
        """Wait until this instance is the leader and ready (initial snapshots applied)."""

        async def check() -> bool:
            status, body = await self.get("/readyz")
            return status == 200 and body["leader"] is True

        return await self.until(check, timeout, "leader and /readyz 200")


def write_config(path: Path, body: str = "") -> Path:
    """A config file whose DSN and listen address come from the environment."""
    path.write_text('[postgres]\ndsn = "postgresql://placeholder/overridden-by-env"\n' + body)
    return path
