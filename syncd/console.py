"""What every `syncd` command shares: the --config option, config loading, running coroutines."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from syncd import logs
from syncd.config import Config
from syncd.database import Connection, connect
from syncd.errors import SyncdError

T = TypeVar("T")

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
