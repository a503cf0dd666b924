"""What every `syncd` command shares: the --config option, config loading, running coroutines."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from syncd import logs
from syncd.config import Config, LowdbSettings
from syncd.database import Connection, connect, init_connection
from syncd.errors import SyncdError
from syncd.tables import specs_for_layout

T = TypeVar("T")
# Exit codes of every command: done, ran and found a problem, could not run.
EXIT_CLEAN, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file; every key can also come from the environment.",
)


def load_config(config_path: Path | None) -> Config:
    """Load and validate the config, or exit 2 with one line naming the bad key."""
    try:
        return Config.load(config_path, os.environ)
    except SyncdError as exc:
        click.echo(f"syncd: {exc}", err=True)
        sys.exit(2)


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion; typed errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(coro)
    except SyncdError as exc:
        click.echo(f"syncd: {logs.redact(str(exc))}", err=True)
        sys.exit(1)


def on_connection(config_path: Path | None, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection to the configured PostgreSQL, closed afterwards (as run_async)."""
    dsn = load_config(config_path).postgres.dsn.get_secret_value()

    async def go() -> T:
        try:
            conn = await connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            click.echo(f"syncd: cannot connect to PostgreSQL at {logs.redact(dsn)}: {exc}", err=True)
            sys.exit(1)
        try:
            return await work(conn)
        finally:
            await conn.close()

    result: T = run_async(go())
    return result


def resolve_files(config: Config, names: Sequence[str]) -> list[LowdbSettings]:
    """LowDB entries by name, file path or table name (all entries when `names` is empty)."""
    if not names:
        return list(config.lowdb)
    found: list[LowdbSettings] = []
    for name in names:
        match = [e for e in config.lowdb if _names(e, name)]
        if not match:
            known = ", ".join(e.name for e in config.lowdb) or "none configured"
            raise click.BadParameter(f"{name!r} is no LowDB entry, file or table of this config (entries: {known})")
        found.extend(m for m in match if m not in found)
    return found


def _names(entry: LowdbSettings, name: str) -> bool:
    tables = {s.table for s in specs_for_layout(entry.layout, entry.collections)}
    return name in (entry.name, str(entry.path)) or name in tables or Path(name).resolve() == entry.path.resolve()


async def with_pool(config: Config, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run `work` on a small pool to the configured PostgreSQL, closed afterwards."""
    pool = await asyncpg.create_pool(
        config.postgres.dsn.get_secret_value(), min_size=1, max_size=2, init=init_connection
    )
    assert pool is not None
    try:
        return await work(pool)
    finally:
        await pool.close()


def actor() -> str:
    """Who runs this command, for the cutover log."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
