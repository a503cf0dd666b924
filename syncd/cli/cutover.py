"""`syncd cutover status|promote|rollback|retire`: one LowDB file's mode, and its transitions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from syncd import outbox
from syncd.cli.console import (
    CommandGroup,
    actor,
    config_option,
    load_config,
    resolve_files,
    run_async,
    with_pool,
)
from syncd.config import LowdbSettings, parse_duration
from syncd.cutover import state, transitions


@click.group("cutover", cls=CommandGroup)
def cutover_group() -> None:
    """Per LowDB file: mirror → promote → pg-primary → retire, and rollback to mirror."""


@cutover_group.command("status")
@config_option
@click.argument("names", nargs=-1)
def status_command(config_path: Path | None, names: tuple[str, ...]) -> None:
    """Mode, reverse-path backlog and recent transitions of each file."""
    config = load_config(config_path)
    entries = resolve_files(config, names)

    async def go(pool: asyncpg.Pool) -> list[tuple[str, state.Mode, int, list[state.Transition]]]:
        async with pool.acquire() as conn:
            modes = await state.modes(conn, [e.name for e in entries])
            rows = []
            for e in entries:
                backlog = await outbox.pending(conn, state.reverse_consumer(e.name))
                rows.append((e.name, modes[e.name], backlog, await state.history(conn, e.name, 5)))
            return rows

    table = Table(title="syncd cutover")
    for column in ("file", "mode", "reverse backlog", "last transitions"):
        table.add_column(column)
    for name, mode, backlog, history in run_async(with_pool(config, go)):
        recent = "; ".join(f"{t.at:%Y-%m-%d %H:%M} {t.from_mode}→{t.to_mode} by {t.actor}" for t in history)
        table.add_row(name, mode, str(backlog), recent)
    Console(width=160).print(table)


def _transition(
    config_path: Path | None, name: str, act: Callable[[asyncpg.Pool, LowdbSettings], Awaitable[Any]]
) -> None:
    config = load_config(config_path)
    (entry,) = resolve_files(config, [name])
    # A refusal (CutoverRefused) reaches the boundary: one line listing every reason, exit 1.
    outcome = run_async(with_pool(config, lambda pool: act(pool, entry)))
    extra = f", {outcome.written_back} record(s) written back" if outcome.written_back else ""
    click.echo(f"{outcome.name}: {outcome.from_mode} → {outcome.to_mode}{extra}")


@cutover_group.command("promote")
@config_option
@click.argument("name")
@click.option("--max-lag", default="5s", show_default=True, help="Wait at most this long for the file to be applied.")
def promote_command(config_path: Path | None, name: str, max_lag: str) -> None:
    """mirror → pg-primary. Refused unless verify is clean, lag is under --max-lag and nothing is quarantined."""
    bound = parse_duration(max_lag)
    _transition(config_path, name, lambda pool, e: transitions.promote(pool, e, actor=actor(), max_lag=bound))


@cutover_group.command("rollback")
@config_option
@click.argument("name")
def rollback_command(config_path: Path | None, name: str) -> None:
    """pg-primary → mirror: flush PG's changes into the file and verify both sides equal first."""
    _transition(config_path, name, lambda pool, e: transitions.rollback(pool, e, actor=actor()))


@cutover_group.command("retire")
@config_option
@click.argument("name")
@click.option("--window", default="24h", show_default=True, help="Refuse until pg-primary this long (dual writes).")
def retire_command(config_path: Path | None, name: str, window: str) -> None:
    """pg-primary → retired: end the reverse path after the rollback window."""
    seconds = parse_duration(window)
    _transition(config_path, name, lambda pool, e: transitions.retire(pool, e, actor=actor(), window=seconds))
