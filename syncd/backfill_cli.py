"""The terminal side of `syncd backfill questdb`: argument parsing, pool, rich progress bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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

from syncd.backfill import Backfill
from syncd.config import Config, QuestdbSettings
from syncd.database import create_pool


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
