"""Fixtures for the real `syncd` command line: run it, configs pointing at servers in every state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pytest

SYNCD = Path(sys.executable).with_name("syncd")


@dataclass(frozen=True)
class Ran:
    """One finished `syncd` invocation."""

    rc: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The last stderr line: the boundary's one line (earlier ones may only be JSON log lines)."""
        lines = self.stderr.splitlines()
        return lines[-1] if lines else ""

    def assert_one_error_line(self) -> None:
        """No traceback; stderr is JSON log lines then exactly one plain line."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert lines, "nothing on stderr"
        for line in lines[:-1]:
            orjson.loads(line)  # every other line is a structured log line


def syncd(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 90) -> Ran:
    """Run the installed `syncd` with `args` to completion (environment: ours, minus any DSN, plus `env`)."""
    base = {k: v for k, v in os.environ.items() if k not in ("SYNCD_PG_DSN", "DATABASE_URL", "SYNCD_CONFIG")}
    done = subprocess.run(
        [str(SYNCD), *map(str, args)],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def write_config(path: Path, dsn: str, extra: str = "") -> Path:
    """A config with this DSN (and `extra` TOML appended)."""
    path.write_text(f'[postgres]\ndsn = "{dsn}"\n{extra}')
    return path


PASSWORD_ROLE = "syncd_pw"
ROLE_PASSWORD = "Pw-7f3a9c-only-here"  # distinctive, so a test can grep output for it


@pytest.fixture(scope="session")
def password_role(pg_server: str) -> Iterator[str]:
    """A role that must log in with its password (ROLE_PASSWORD); with a wrong one, an auth failure.

    The session cluster trusts every local login, so one pg_hba.conf line asks this role alone for a
    password; it is removed afterwards.
    """
    import asyncio

    async def setup() -> str:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}")
            await conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
            hba: str = await conn.fetchval("SHOW hba_file")
            return hba
        finally:
            await conn.close()

    async def reload() -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    async def asks_password() -> bool:
        try:
            conn = await asyncpg.connect(pg_server, user=PASSWORD_ROLE, password="wrong")
        except asyncpg.InvalidPasswordError:
            return True
        await conn.close()
        return False

    hba = Path(asyncio.run(setup()))
    original = hba.read_text()
    hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n{original}")
    asyncio.run(reload())
    deadline = time.monotonic() + 10
    while not asyncio.run(asks_password()):  # the postmaster re-reads pg_hba.conf asynchronously
        assert time.monotonic() < deadline, "pg_hba.conf reload not seen within 10 s"
        time.sleep(0.05)
    try:
        yield PASSWORD_ROLE
    finally:
        hba.write_text(original)
        asyncio.run(reload())
