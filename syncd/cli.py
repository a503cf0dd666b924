"""`syncd run|migrate|status|…`: the command line. Reads the environment once, here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson
import structlog
from rich.console import Console
from rich.table import Table

from syncd import logs
from syncd.config import Config, QuestdbSettings
from syncd.console import config_option, load_config, run_async

log = structlog.get_logger(__name__)


@click.group()
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True)
def main(log_level: str, log_format: str) -> None:
    """syncd: LowDB and QuestDB into PostgreSQL, with a reversible cutover."""
    logs.configure(log_level, json=log_format == "json")


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    from syncd.daemon import Daemon

    config = load_config(config_path)
    run_async(Daemon(config).serve())


@main.command()
@config_option
def migrate(config_path: Path | None) -> None:
    """Apply pending schema migrations (idempotent, checksummed, under an advisory lock)."""
    from syncd.database import connect
    from syncd.migrate import migrate as apply_migrations

    config = load_config(config_path)

    async def go() -> list[str]:
        conn = await connect(config.postgres.dsn.get_secret_value())
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = run_async(go())
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw /status document.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Show the running daemon's /status as a table; exit 1 when it cannot be reached."""
    import urllib.request

    config = load_config(config_path)
    url = f"http://{config.http.host}:{config.http.port}/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            document = orjson.loads(response.read())
    except OSError as exc:
        click.echo(f"syncd: status endpoint {url} unreachable: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    Console().print(status_table(document))


def status_table(document: dict[str, Any]) -> Table:
    """Render a /status document as a rich table, one row per stream."""
    role = "leader" if document.get("leader") else "standby"
    table = Table(title=f"syncd {document.get('instance', '?')} ({role}, epoch {document.get('epoch')})")
    columns = ("stream", "mode", "caught up", "lag s", "since success s", "rows i/u/d", "quarantined", "last error")
    for column in columns:
        table.add_column(column)
    for name, stream in document.get("streams", {}).items():
        rows = stream.get("rows_applied", {})
        table.add_row(
            name,
            str(stream.get("mode")),
            "yes" if stream.get("caught_up") else "no",
            _fmt(stream.get("event_lag_seconds")),
            _fmt(stream.get("seconds_since_last_success")),
            f"{rows.get('insert', 0)}/{rows.get('update', 0)}/{rows.get('delete', 0)}",
            str(stream.get("quarantined", 0)),
            str(stream.get("last_error") or ""),
        )
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@main.group()
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
    from syncd.backfill_cli import run_backfill

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


def _register_quarantine() -> None:
    from syncd.quarantine_cli import quarantine_group

    main.add_command(quarantine_group)


def _register_cutover() -> None:
    from syncd.cutover_cli import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


def _register_audit() -> None:
    from syncd.audit_cli import audit_command

    main.add_command(audit_command)


_register_quarantine()
_register_cutover()
_register_audit()
