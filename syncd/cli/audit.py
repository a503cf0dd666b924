"""`syncd audit TABLE KEY`: the change history of one record, from syncd.audit_log."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import click
import orjson
from rich.table import Table

from syncd import audit
from syncd.cli.console import Column, config_option, grid, on_connection, out
from syncd.database import Connection

_VALUE_WIDTH = 60
_WHOLE_ROW = {
    "insert": "(new row)",
    "delete": "(row deleted)",
    "accept": "(held record accepted)",
    "discard": "(held record discarded)",
}


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
    out().print(history_table(qualified, key, entries))


AUDIT_COLUMNS = (Column("change (UTC)", keep=True), Column("field: old → new"))


def history_table(table: str, key: str, entries: list[audit.AuditEntry]) -> Table:
    """Render a record's history, one row per change: when/op/origin/txid, then each field's old → new.

    Two columns, so the values get most of an 80-column terminal; `--json` has every detail.
    """
    rows = [(_when(e), _changes(e)) for e in entries]
    return grid(f"syncd audit {table} {key} ({len(entries)} change(s))", AUDIT_COLUMNS, rows)


def _when(e: audit.AuditEntry) -> str:
    at = e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{at}\n{e.op} by {e.origin}" + ("" if e.txid is None else f"\ntxid {e.txid}")


def _changes(e: audit.AuditEntry) -> str:
    lines = [_WHOLE_ROW[e.op]] if e.op in _WHOLE_ROW else []
    return "\n".join(lines + [f"{name}: {_value(c.old)} → {_value(c.new)}" for name, c in e.changes.items()])


def _value(value: Any) -> str:
    if value is None:
        return "∅"
    text = orjson.dumps(value).decode()
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"
