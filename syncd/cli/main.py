"""`syncd` itself and `syncd run|migrate|status`; every other command group has a module of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
import structlog
from rich.console import Console
from rich.table import Table

from syncd import logs
from syncd.cli import audit, backfill, backup, cutover, quarantine, verify
from syncd.cli.console import config_option, load_config, run_async

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


for command in (
    backfill.backfill,
    backup.backup,
    backup.restore,
    cutover.cutover_group,
    quarantine.quarantine_group,
    audit.audit_command,
    verify.verify,
):
    main.add_command(command)
