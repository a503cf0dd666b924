"""`syncd cutover status|shadow|promote|rollback|retire`: one LowDB file's mode, its transitions and its clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import click

from syncd import outbox
from syncd.cli.console import (
    Column,
    CommandGroup,
    actor,
    config_option,
    grid,
    load_config,
    out,
    resolve_files,
    run_async,
    with_pool,
)
from syncd.config import LowdbSettings, parse_duration
from syncd.cutover import clients, state, transitions


@click.group("cutover", cls=CommandGroup)
def cutover_group() -> None:
    """Per LowDB file: mirror → (shadow →) promote → pg-primary → retire, and rollback to mirror."""


@cutover_group.command("status")
@config_option
@click.argument("names", nargs=-1)
def status_command(config_path: Path | None, names: tuple[str, ...]) -> None:
    """Mode, reverse-path backlog, recent transitions and the connected cutover clients of each file."""
    config = load_config(config_path)
    entries = resolve_files(config, names, config_path)
    Row = tuple[str, state.Mode, int, list[state.Transition], list[clients.ClientReport]]

    async def go(pool: asyncpg.Pool) -> list[Row]:
        async with pool.acquire() as conn:
            modes = await state.modes(conn, [e.name for e in entries])
            found = await clients.reports(conn, [e.name for e in entries])
            rows = []
            for e in entries:
                backlog = await outbox.pending(conn, state.reverse_consumer(e.name))
                rows.append((e.name, modes[e.name], backlog, await state.history(conn, e.name, 5), found[e.name]))
            return rows

    rows: list[tuple[str, ...]] = []
    listed: list[tuple[str, ...]] = []
    for name, mode, backlog, history, found in run_async(with_pool(config, go)):
        recent = "\n".join(f"{t.at:%Y-%m-%d %H:%M} {t.from_mode}→{t.to_mode} by {t.actor}" for t in history)
        rows.append((name, mode, str(backlog), recent))
        listed.extend((name, *_client_cells(c)) for c in found)
    console = out()
    console.print(grid("syncd cutover", CUTOVER_COLUMNS, rows))
    console.print(grid("cutover clients", CLIENT_COLUMNS, listed) if listed else "no cutover client has registered")


CUTOVER_COLUMNS = (
    Column("file", keep=True),
    Column("mode", keep=True),
    Column("reverse backlog", right=True),
    Column("last transitions (UTC)"),
)
CLIENT_COLUMNS = (
    Column("file", keep=True),
    Column("client", keep=True),
    Column("mode", keep=True),
    Column("writes", keep=True),
    Column("holds"),
    Column("shadow reads"),
)


def _client_cells(c: clients.ClientReport) -> list[str]:
    gone = "" if c.connected else f" (gone since {c.seen_at:%H:%M:%S})"
    mismatches = ", ".join(f"{n} in {t}" for t, n in sorted(c.shadow_mismatches.items()) if n) or "none"
    return [
        c.label + gone,
        c.mode,
        c.writes,
        f"{c.holds}, longest {c.hold_ms_max:.0f} ms, {c.holds_timed_out} timed out",
        f"{c.shadow_reads}, mismatches: {mismatches}",
    ]


def _transition(
    config_path: Path | None, name: str, act: Callable[[asyncpg.Pool, LowdbSettings], Awaitable[Any]]
) -> None:
    config = load_config(config_path)
    (entry,) = resolve_files(config, [name], config_path)
    # A refusal (CutoverRefused) reaches the boundary: one line listing every reason, exit 1.
    outcome = run_async(with_pool(config, lambda pool: act(pool, entry)))
    extra = f", {outcome.written_back} record(s) written back" if outcome.written_back else ""
    if outcome.handover_seconds is not None:
        extra += f", handover {outcome.handover_seconds * 1000:.0f} ms with {outcome.clients} client(s)"
    click.echo(f"{outcome.name}: {outcome.from_mode} → {outcome.to_mode}{extra}")


_HANDOVER_HELP = "Abort (and stay in the old mode) unless every client stopped writing within this."


@cutover_group.command("shadow")
@config_option
@click.argument("name")
def shadow_command(config_path: Path | None, name: str) -> None:
    """mirror → shadow: the clients serve LowDB and also read PostgreSQL and compare (`rollback` ends it)."""
    _transition(config_path, name, lambda pool, e: transitions.shadow(pool, e, actor=actor()))


@cutover_group.command("promote")
@config_option
@click.argument("name")
@click.option("--max-lag", default="5s", show_default=True, help="Wait at most this long for the file to be applied.")
@click.option("--handover-timeout", default="2s", show_default=True, help=_HANDOVER_HELP)
def promote_command(config_path: Path | None, name: str, max_lag: str, handover_timeout: str) -> None:
    """mirror|shadow → pg-primary. Refused unless verify is clean, lag is under --max-lag, nothing is
    quarantined and no client's shadow reads disagree; the clients' writes are held during the handover."""
    bound, timeout = parse_duration(max_lag), parse_duration(handover_timeout)
    _transition(
        config_path, name, lambda pool, e: transitions.promote(pool, e, actor=actor(), max_lag=bound, timeout=timeout)
    )


@cutover_group.command("rollback")
@config_option
@click.argument("name")
@click.option("--handover-timeout", default="2s", show_default=True, help=_HANDOVER_HELP)
def rollback_command(config_path: Path | None, name: str, handover_timeout: str) -> None:
    """pg-primary → mirror: the clients stop writing PG, PG's changes are flushed into the file and both
    sides verified equal first. shadow → mirror: shadow reads end."""
    timeout = parse_duration(handover_timeout)
    _transition(config_path, name, lambda pool, e: transitions.rollback(pool, e, actor=actor(), timeout=timeout))


@cutover_group.command("retire")
@config_option
@click.argument("name")
@click.option("--window", default="24h", show_default=True, help="Refuse until pg-primary this long (dual writes).")
def retire_command(config_path: Path | None, name: str, window: str) -> None:
    """pg-primary → retired: end the reverse path after the rollback window."""
    seconds = parse_duration(window)
    _transition(config_path, name, lambda pool, e: transitions.retire(pool, e, actor=actor(), window=seconds))
