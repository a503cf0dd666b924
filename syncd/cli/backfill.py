"""`syncd backfill questdb`: argument parsing, pool, rich progress bar, the summary line."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from syncd.cli.console import CommandGroup, config_option, load_config, out, run_async
from syncd.cli.summary import summary_table, summary_title
from syncd.config import Config, QuestdbSettings, parse_duration
from syncd.database import create_pool
from syncd.errors import RetriesExhausted
from syncd.questdb.backfill import Backfill
from syncd.questdb.reader import SOURCE
from syncd.questdb.sql import SIGNALS_TABLE, VERSIONED

TABLES = (SIGNALS_TABLE, *sorted(VERSIONED))
QUESTDB_ENV = {
    "host": "QUESTDB_HOST",
    "http_port": "QUESTDB_HTTP_PORT",
    "pg_port": "QUESTDB_PG_PORT",
    "user": "QUESTDB_USER",
    "password": "QUESTDB_PASSWORD",
}
"""Upstream's variables, read when the config has no [questdb] (the backfill needs none)."""


class RowsPerSecond(ProgressColumn):
    """Throughput of the bar in rows/s."""

    def render(self, task: Task) -> Text:
        """`12,345 rows/s`, or `-` before the first batch."""
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def parse_bound(text: str | None, *, end: bool) -> datetime | None:
    """`2025-10-01` (a whole day; inclusive as an end) or an ISO instant, as aware UTC."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end and len(text) == 10:
        value += timedelta(days=1) - timedelta(microseconds=1)
    return value


def check_bound(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A `--from`/`--to` value must parse as a day or an ISO instant (kept as text: `--to DAY` is inclusive)."""
    if value is not None:
        try:
            parse_bound(value, end=False)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is neither a day (2025-10-01) nor an ISO instant (2025-10-01T12:00:00Z)", param=param
            ) from None
    return value


async def run_backfill(
    config: Config,
    settings: QuestdbSettings,
    table: str,
    start: str | None,
    end: str | None,
    *,
    progress: bool,
    retry_for: float | None = None,
) -> dict[str, Any]:
    """Run one backfill to completion and return its summary (a failure retried past `retry_for` s ends it)."""
    pool = await create_pool(config.postgres)
    job = Backfill(settings, pool, table, give_up_after=retry_for)
    try:
        lo, hi = parse_bound(start, end=False), parse_bound(end, end=True)
        if not progress:
            return (await job.run(lo, hi)).as_json()
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), refresh_per_second=4) as bar:
            task = bar.add_task(f"backfill {table}", total=None)

            def advance(rows: int) -> None:
                if job.stats.total and bar.tasks[0].total is None:
                    bar.update(task, total=job.stats.total)
                bar.advance(task, rows)

            stats = await job.run(lo, hi, advance)
            bar.update(task, total=max(stats.total, 1), completed=stats.total)
        return stats.as_json()
    finally:
        await job.close()
        await pool.close()


@click.group(cls=CommandGroup)
def backfill() -> None:
    """Load history into PostgreSQL in resumable chunks."""


@backfill.command("questdb")
@config_option
@click.option("--table", "table", required=True, type=click.Choice(TABLES), help="QuestDB table.")
@click.option("--from", "start", callback=check_bound, help="First day or instant; default: oldest row.")
@click.option("--to", "end", callback=check_bound, help="Last day (inclusive) or instant; default: newest row.")
@click.option("--page-size", type=click.IntRange(min=1), default=None, help="Rows per page [questdb.page_size].")
@click.option(
    "--retry-for", default="60s", show_default=True, help="Retry QuestDB/PostgreSQL being down this long, then give up."
)
@click.option("--no-progress", is_flag=True, help="No progress bar (the summary line is still printed).")
def backfill_questdb(
    config_path: Path | None,
    table: str,
    start: str | None,
    end: str | None,
    page_size: int | None,
    retry_for: str,
    no_progress: bool,
) -> None:
    """Copy TABLE's rows (by day, resumable after any crash) with a progress bar; prints a JSON summary.

    Without a [questdb] section it reads the QUESTDB_* environment (or QuestDB's defaults,
    127.0.0.1:9000); a server that stays down for --retry-for ends the command with exit 2.
    """
    try:
        give_up = parse_duration(retry_for)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retry-for") from None
    config = load_config(config_path)
    settings, origin = _questdb_settings(config)
    if page_size:
        settings = settings.model_copy(update={"page_size": page_size})
    job = run_backfill(config, settings, table, start, end, progress=not no_progress, retry_for=give_up)
    try:
        stats = run_async(job)
    except RetriesExhausted as exc:
        if config.questdb is not None or SOURCE not in exc.last:
            raise
        # Where the address came from is the first thing to check when there is no [questdb].
        where = f"{settings.host}:{settings.http_port}"
        raise RetriesExhausted(f"{exc.last} (no [questdb] in the config: {where} is {origin})", exc.attempts,
                               exc.seconds) from exc  # fmt: skip
    out().print(summary_table(summary_title(f"syncd backfill {table}", stats), {table: stats}))
    click.echo(orjson.dumps(stats).decode())


def _questdb_settings(config: Config) -> tuple[QuestdbSettings, str]:
    """[questdb] from the config, else upstream's QUESTDB_* env names (backfill needs no [questdb]),
    and where they came from."""
    if config.questdb is not None:
        return config.questdb, "[questdb]"
    found = {k: os.environ[v] for k, v in QUESTDB_ENV.items() if v in os.environ}
    return QuestdbSettings.model_validate(found), "from QUESTDB_*" if found else "QuestDB's default"
