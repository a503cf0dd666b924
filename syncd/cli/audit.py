"""`syncd audit TABLE KEY`: the change history of one record, from syncd.audit_log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from syncd import audit
from syncd.cli.console import config_option, on_connection
from syncd.database import Connection

_VALUE_WIDTH = 60
_WHOLE_ROW = {"insert": "(new row)", "delete": "(row deleted)"}


@click.command("audit")
@config_option
@click.argument("table")
@click.argument("key")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N changes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change (old and new values included).")
def audit_command(config_path: Path | None, table: str, key: str, limit: int, as_json: bool) -> None:
    """Show the history of record KEY of TABLE, oldest change first.

    TABLE is schema-qualified (workspace.workspace_items) or bare (workspace_items). Each change
    lists when, the operation, its origin (syncd = mirrored by syncd, app = written by another
    client unless it set syncd.origin), the transaction id and, per changed field, the old and new
    value.
    """

    async def work(conn: Connection) -> tuple[str, list[audit.AuditEntry]]:
        qualified = await audit.resolve_table(conn, table)  # an unknown table raises: exit 2
        return qualified, await audit.history(conn, qualified, key, limit=limit)

    qualified, entries = on_connection(config_path, work)
    if as_json:
        for entry in entries:
            click.echo(orjson.dumps({"table": qualified, "key": key, **entry.to_json()}).decode())
        return
    Console(width=160).print(history_table(qualified, key, entries))


def history_table(table: str, key: str, entries: list[audit.AuditEntry]) -> Table:
    """Render a record's history as a rich table, one row per change."""
    result = Table(title=f"syncd audit {table} {key} ({len(entries)} change(s))")
    for column in ("at", "op", "origin", "txid", "changed fields", "old → new"):
        result.add_column(column, overflow="fold")
    for e in entries:
        result.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.op,
            e.origin,
            "" if e.txid is None else str(e.txid),
            _WHOLE_ROW.get(e.op) or ", ".join(e.changed_fields),
            "\n".join(f"{name}: {_value(c.old)} → {_value(c.new)}" for name, c in e.changes.items()),
        )
    return result


def _value(value: Any) -> str:
    if value is None:
        return "∅"
    text = orjson.dumps(value).decode()
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"
