"""`syncd verify`, `syncd cutover status|promote|rollback|retire`, `syncd backup`, `syncd restore`."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
import orjson
from rich.console import Console
from rich.table import Table

from syncd import logs, outbox
from syncd.config import Config, LowdbSettings, parse_duration
from syncd.console import config_option, load_config, run_async
from syncd.cutover import backup as backups
from syncd.cutover import state, transitions
from syncd.cutover.verify import FileParity, verify_file, verify_signals
from syncd.database import init_connection
from syncd.errors import CutoverRefused, SyncdError
from syncd.sources.questdb_reconcile import DayParity
from syncd.tables import specs_for_layout

T = TypeVar("T")
EXIT_CLEAN, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


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


async def _with_pool(config: Config, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
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


# -- verify ---------------------------------------------------------------------------------------


SIGNALS_NAMES = frozenset({"tp_capital_signals", "questdb:tp_capital_signals", "signals.tp_capital_signals"})


@click.command()
@config_option
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file or day.")
@click.option(
    "--days", type=int, default=None, help="Signals: days to compare, today included [questdb.reconcile_days]."
)
def verify(config_path: Path | None, names: tuple[str, ...], as_json: bool, days: int | None) -> None:
    """Compare sources with PostgreSQL: exit 0 clean, 1 mismatch, 2 could not run.

    NAMES are LowDB entry names, file paths or table names, or tp_capital_signals (QuestDB, per day).
    Default: every LowDB file, and the signals when [questdb] is configured.
    """
    config = load_config(config_path)
    lowdb_names = [n for n in names if n not in SIGNALS_NAMES]
    entries = resolve_files(config, lowdb_names) if lowdb_names or not names else []
    signals = bool(SIGNALS_NAMES.intersection(names)) or (not names and config.questdb is not None)
    if signals and config.questdb is None:
        raise click.BadParameter("tp_capital_signals needs a [questdb] section in the config")

    async def go(pool: asyncpg.Pool) -> tuple[list[FileParity], list[DayParity]]:
        async with pool.acquire() as conn:
            files = [await verify_file(conn, e) for e in entries]
        if not signals:
            return files, []
        assert config.questdb is not None
        span = days or config.questdb.reconcile_days
        dsn = config.postgres.dsn.get_secret_value()
        return files, await verify_signals(config.questdb, dsn, span, datetime.now(UTC))

    try:
        files, day_parities = asyncio.run(_with_pool(config, go))
    except (SyncdError, OSError, asyncpg.PostgresError) as exc:
        click.echo(f"syncd: verify could not run: {logs.redact(str(exc))}", err=True)
        sys.exit(EXIT_ERROR)
    _print_parities(files, day_parities, as_json)
    clean = all(p.clean for p in files) and all(d.clean for d in day_parities)
    sys.exit(EXIT_CLEAN if clean else EXIT_MISMATCH)


def _print_parities(files: list[FileParity], days: list[DayParity], as_json: bool) -> None:
    if as_json:
        for parity in files:
            click.echo(orjson.dumps(parity_json(parity)).decode())
        for day in days:
            click.echo(orjson.dumps({"table": "signals.tp_capital_signals", **dataclasses.asdict(day)}).decode())
        return
    console = Console(width=160)
    for parity in files:
        console.print(parity_table(parity))
    if days:
        table = Table(title="verify signals.tp_capital_signals (QuestDB vs PostgreSQL, per day)")
        for column in ("day", "questdb rows", "pg rows", "hash"):
            table.add_column(column)
        for d in days:
            table.add_row(d.day, str(d.source_rows), str(d.pg_rows), "equal" if d.clean else "DIFFERENT")
        console.print(table)


def parity_json(parity: FileParity) -> dict[str, Any]:
    """A FileParity as JSON."""
    return {
        "name": parity.name,
        "path": str(parity.path),
        "sha": parity.sha,
        "clean": parity.clean,
        "tables": [
            {
                "table": t.table,
                "source_rows": t.source_rows,
                "pg_rows": t.pg_rows,
                "mismatched_rows": t.mismatched_rows,
                "differing_buckets": list(t.differing_buckets),
                "missing_in_pg": list(t.missing_in_pg),
                "missing_in_source": list(t.missing_in_source),
                "differing": list(t.differing),
                "invalid": list(t.invalid),
            }
            for t in parity.tables
        ],
    }


def parity_table(parity: FileParity) -> Table:
    """A FileParity as a rich table, one row per table."""
    verdict = "clean" if parity.clean else f"{parity.mismatched_rows} mismatching row(s)"
    table = Table(title=f"verify {parity.name} ({parity.path}): {verdict}")
    for column in ("table", "file rows", "pg rows", "mismatch", "keys (first ones)"):
        table.add_column(column)
    for t in parity.tables:
        keys = [f"+pg:{k}" for k in t.missing_in_pg] + [f"+file:{k}" for k in t.missing_in_source]
        keys += [f"~{k}" for k in t.differing] + [f"!{k}" for k in t.invalid]
        table.add_row(t.table, str(t.source_rows), str(t.pg_rows), str(t.mismatched_rows), " ".join(keys))
    return table


# -- cutover --------------------------------------------------------------------------------------


@click.group("cutover")
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
    for name, mode, backlog, history in run_async(_with_pool(config, go)):
        recent = "; ".join(f"{t.at:%Y-%m-%d %H:%M} {t.from_mode}→{t.to_mode} by {t.actor}" for t in history)
        table.add_row(name, mode, str(backlog), recent)
    Console(width=160).print(table)


def _transition(
    config_path: Path | None, name: str, act: Callable[[asyncpg.Pool, LowdbSettings], Awaitable[Any]]
) -> None:
    config = load_config(config_path)
    (entry,) = resolve_files(config, [name])
    try:
        outcome = asyncio.run(_with_pool(config, lambda pool: act(pool, entry)))
    except CutoverRefused as exc:
        click.echo(f"syncd: cutover of {exc.name} refused:", err=True)
        for reason in exc.reasons:
            click.echo(f"  - {logs.redact(reason)}", err=True)
        sys.exit(EXIT_MISMATCH)
    except (SyncdError, OSError, asyncpg.PostgresError) as exc:
        click.echo(f"syncd: {logs.redact(str(exc))}", err=True)
        sys.exit(EXIT_ERROR)
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


# -- backup and restore ---------------------------------------------------------------------------


@click.command()
@config_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
def backup(config_path: Path | None, out: Path) -> None:
    """pg_dump -Fc of the synced schemas, a copy of each LowDB file and a manifest, into OUT."""
    config = load_config(config_path)
    manifest = run_async(backups.backup(config.postgres.dsn.get_secret_value(), out, config.lowdb))
    rows = sum(t["rows"] for t in manifest.tables.values())
    click.echo(f"backup {out}: {len(manifest.tables)} tables, {rows} rows, {len(manifest.files)} LowDB file(s)")


@click.command()
@config_option
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
def restore(config_path: Path | None, source: Path) -> None:
    """pg_restore SOURCE into the configured (empty) database, then check every table against the manifest."""
    config = load_config(config_path)
    manifest = run_async(backups.restore(config.postgres.dsn.get_secret_value(), source))
    click.echo(f"restored {source}: {len(manifest.tables)} tables match the manifest")
    for name, entry in manifest.files.items():
        click.echo(f"LowDB copy of {name} ({entry['path']}): {source / backups.LOWDB_DIR / (name + '.json')}")


COMMANDS = (verify, cutover_group, backup, restore)
