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

from syncd.cli.console import config_option, load_config, run_async
from syncd.config import Config, QuestdbSettings
from syncd.database import create_pool
from syncd.questdb.backfill import Backfill


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


async def run_backfill(
    config: Config, settings: QuestdbSettings, table: str, start: str | None, end: str | None, *, progress: bool
) -> dict[str, Any]:
    """Run one backfill to completion and return its summary."""
    pool = await create_pool(config.postgres)
    job = Backfill(settings, pool, table)
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


@click.group()
def backfill() -> None:
    """Load history into PostgreSQL in resumable chunks."""


@backfill.command("questdb")
@config_option
@click.option("--table", "table", required=True, help="QuestDB table, e.g. tp_capital_signals.")
@click.option("--from", "start", default=None, help="First day or instant (UTC ISO); default: oldest row.")
@click.option("--to", "end", default=None, help="Last day (inclusive) or instant (UTC ISO); default: newest row.")
@click.option("--page-size", type=int, default=None, help="Rows per page/batch (default: questdb.page_size).")
@click.option("--no-progress", is_flag=True, help="No progress bar (the summary line is still printed).")
def backfill_questdb(
    config_path: Path | None, table: str, start: str | None, end: str | None, page_size: int | None, no_progress: bool
) -> None:
    """Copy TABLE's rows (by day, resumable after any crash) with a progress bar; prints a JSON summary."""
    config = load_config(config_path)
    settings = _questdb_settings(config)
    if page_size:
        settings = settings.model_copy(update={"page_size": page_size})
    stats = run_async(run_backfill(config, settings, table, start, end, progress=not no_progress))
    click.echo(orjson.dumps(stats).decode())


def _questdb_settings(config: Config) -> QuestdbSettings:
    """[questdb] from the config, else upstream's QUESTDB_* env names (backfill needs no [questdb])."""
    if config.questdb is not None:
        return config.questdb
    names = {
        "host": "QUESTDB_HOST",
        "http_port": "QUESTDB_HTTP_PORT",
        "pg_port": "QUESTDB_PG_PORT",
        "user": "QUESTDB_USER",
        "password": "QUESTDB_PASSWORD",
    }
    return QuestdbSettings.model_validate({k: os.environ[v] for k, v in names.items() if v in os.environ})
