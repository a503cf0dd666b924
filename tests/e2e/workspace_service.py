"""The Workspace-shaped Express service (through the cutover client) and the load process, as subprocesses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from tests.e2e.prisma import NODE_DIR

SERVER = NODE_DIR / "workspace-service" / "server.mjs"
ROOT = Path(__file__).resolve().parents[2]


def _line(stream: IO[bytes]) -> str:
    return stream.readline().decode().strip()


class Service:
    """`node server.mjs` on a free port; its stderr (the client's JSON events) goes to a log file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str = "service") -> None:
        self.env = {**os.environ, **env}
        self.log = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> Service:
        """Spawn it and wait for its "listening PORT" line."""
        # tsx's loader for the Prisma storage client (`prisma generate` writes TypeScript), inside node
        # itself: the tsx CLI is a parent process that SIGKILLs the service (exit 143) when it does not
        # acknowledge a SIGTERM within 30 ms, which a busy machine's service does not.
        loader = ["--import", "tsx"] if self.env.get("STORAGE") == "prisma" else []
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["node", *loader, str(SERVER)], cwd=SERVER.parent, env=self.env, stdout=subprocess.PIPE, stderr=log
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(_line, self.proc.stdout), 60)
        assert line.startswith("listening "), f"service did not start ({line!r}):\n{self.output()}"
        self.url = f"http://127.0.0.1:{line.split()[1]}"
        return self

    async def health(self) -> dict[str, Any]:
        """The cutover client's status, as the service's /health reports it."""
        async with aiohttp.ClientSession() as session, session.get(self.url + "/health") as response:
            body: dict[str, Any] = await response.json()
            return body["cutover"]

    def stop(self) -> int:
        """SIGTERM and wait; the service closes the cutover client (and says goodbye in the registry)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def output(self) -> str:
        """What the service logged."""
        return self.log.read_text(errors="replace")


class Load:
    """tests/e2e/cutover_load.py in its own process, steered over stdin."""

    def __init__(self, url: str, rate: float, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.cutover_load", url, str(rate), str(out)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    async def command(self, word: str) -> None:
        """Send `word` and wait for its acknowledgement."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()
        answer = await asyncio.wait_for(asyncio.to_thread(_line, self.proc.stdout), 60)
        assert answer == {"pause": "paused", "resume": "resumed", "stop": "stopped"}[word], answer

    async def stop(self) -> dict[str, Any]:
        """Stop it and read its report."""
        await self.command("stop")
        self.proc.wait(30)
        report: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return report

    def kill(self) -> None:
        """End it if it still runs, and close its pipes (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
