"""`syncd verify`: compare the sources with PostgreSQL (exit 0 clean, 1 mismatch or held rows, 2 could not run)."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson
from rich.table import Table

from syncd.cli.console import (
    EXIT_CLEAN,
    EXIT_MISMATCH,
    Column,
    config_option,
    grid,
    load_config,
    out,
    resolve_files,
    run_async,
    with_pool,
)
from syncd.cutover.verify import LIST_LIMIT, FileParity, verify_file, verify_signals
from syncd.questdb.reconcile import DayParity

SIGNALS_NAMES = frozenset({"tp_capital_signals", "questdb:tp_capital_signals", "signals.tp_capital_signals"})


@click.command()
@config_option
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file or day.")
@click.option(
    "--days", type=int, default=None, help="Signals: days to compare, today included [questdb.reconcile_days]."
)
def verify(config_path: Path | None, names: tuple[str, ...], as_json: bool, days: int | None) -> None:
    """Compare sources with PostgreSQL: exit 0 clean, 1 mismatch or held rows, 2 could not run.

    NAMES are LowDB entry names, file paths or table names, or tp_capital_signals (QuestDB, per day;
    rows held in quarantine are listed as !KEY, outside the comparison).
    Default: every LowDB file, and the signals when [questdb] is configured.
    """
    config = load_config(config_path)
    lowdb_names = [n for n in names if n not in SIGNALS_NAMES]
    entries = resolve_files(config, lowdb_names, config_path) if lowdb_names or not names else []
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

    files, day_parities = run_async(with_pool(config, go))
    _print_parities(files, day_parities, as_json)
    # A held row is accounted for, not a mismatch, yet still a problem to fix (exit 1, as for a
    # LowDB file's held record).
    clean = all(p.clean for p in files) and all(d.clean and not d.held for d in day_parities)
    sys.exit(EXIT_CLEAN if clean else EXIT_MISMATCH)


def _print_parities(files: list[FileParity], days: list[DayParity], as_json: bool) -> None:
    if as_json:
        for parity in files:
            click.echo(orjson.dumps(parity_json(parity)).decode())
        for day in days:
            click.echo(orjson.dumps({"table": "signals.tp_capital_signals", **dataclasses.asdict(day)}).decode())
        return
    console = out()
    for parity in files:
        console.print(parity_table(parity))
    if days:
        rows = [
            (d.day, str(d.source_rows), str(d.pg_rows), "equal" if d.clean else "DIFFERENT", held_keys(d)) for d in days
        ]
        title = "verify signals.tp_capital_signals (QuestDB vs PostgreSQL, per day)"
        console.print(grid(title, DAY_COLUMNS, rows))


def held_keys(day: DayParity) -> str:
    """The day's held rows as `!KEY`, `(pg: older version)` after those PostgreSQL keeps a previous version of."""
    stale = set(day.stale)
    return " ".join(f"!{k} (pg: older version)" if k in stale else f"!{k}" for k in day.held[:LIST_LIMIT])


DAY_COLUMNS = (
    Column("day", keep=True),
    Column("questdb rows", right=True),
    Column("pg rows", right=True),
    Column("hash", keep=True),
    Column("held in quarantine (not compared)"),
)


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
    rows = []
    for t in parity.tables:
        keys = [f"+pg:{k}" for k in t.missing_in_pg] + [f"+file:{k}" for k in t.missing_in_source]
        keys += [f"~{k}" for k in t.differing] + [f"!{k}" for k in t.invalid]
        rows.append((t.table, str(t.source_rows), str(t.pg_rows), str(t.mismatched_rows), " ".join(keys)))
    return grid(f"verify {parity.name} ({parity.path}): {verdict}", PARITY_COLUMNS, rows)


PARITY_COLUMNS = (
    Column("table", keep=True),
    Column("file rows", right=True),
    Column("pg rows", right=True),
    Column("mismatch", right=True),
    Column("keys (first ones)"),
)
