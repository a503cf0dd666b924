"""`syncd explain TABLE KEY`: the source version, transaction, events and quarantine history of one row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from syncd import explain
from syncd.cli.console import Column, config_option, grid, load_config, on_connection, out
from syncd.database import Connection

COLUMNS = (Column("what", keep=True), Column("found"))


@click.command("explain")
@config_option
@click.argument("table")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The whole provenance as one JSON object.")
def explain_command(config_path: Path | None, table: str, key: str, as_json: bool) -> None:
    """Where row KEY of TABLE came from: the source position (LowDB file and version sha, or QuestDB
    cursor) of the batch that wrote it, its transaction, last change, outbox events and quarantine history.

    TABLE is any table syncd writes, qualified (signals.tp_capital_signals) or bare; KEY is its id
    (signal_key for the signals, COLLECTION/ID for syncd.documents).
    """
    config = load_config(config_path)
    target = explain.resolve(config, table)  # an unknown table: one line, exit 2

    async def work(conn: Connection) -> explain.Provenance:
        return await explain.explain(conn, target, key)

    found = on_connection(config_path, work)
    if as_json:
        click.echo(orjson.dumps(found.to_json()).decode())
        return
    files = {e.name: e.path for e in config.lowdb}
    out().print(grid(f"syncd explain {found.table} {key}", COLUMNS, _rows(found, files)))


def _rows(p: explain.Provenance, files: dict[str, Path]) -> list[tuple[str, str]]:
    rows = [("stream", p.stream), ("row", _row(p))]
    rows.append(("source position", _position(p, files.get(p.stream))))
    if not p.captured:
        rows.append(("changes", "not change-captured (layout generic): no audit or outbox rows"))
    change = p.last_change
    if change is not None:
        fields = ", ".join(change["changed_fields"])
        rows.append(("last change", f"{change['at']:%Y-%m-%d %H:%M:%S} {change['op']} by {change['origin']} "
                     f"({change['actor']}), txid {change['txid']}" + (f": {fields}" if fields else "")))  # fmt: skip
    events = [f"#{e['id']} {e['op']} by {e['origin']}, txid {e['txid']}, {e['created_at']:%H:%M:%S}" for e in p.events]
    if p.captured:
        rows.append(("outbox events", "\n".join(events) or "none (none yet, or pruned once consumed)"))
    held = [f"#{q['id']} {q['status']} {q['created_at']:%Y-%m-%d %H:%M}: {q['reason']}" for q in p.quarantine]
    rows.append(("quarantine", "\n".join(held) or "never quarantined"))
    return rows


def _row(p: explain.Provenance) -> str:
    if not p.present:
        return "not in PostgreSQL (never synced, deleted, or held in quarantine)"
    return f"present, last written by txid {p.row_txid}, synced_at {p.synced_at}"


def _position(p: explain.Provenance, path: Path | None) -> str:
    if p.position is None:
        return "no checkpoint for this stream yet"
    where = _describe(p.position, path)
    if p.position_wrote_row:
        return f"{where}\n(committed with this row: the version that wrote it)"
    return f"{where}\n(the stream's position now; this row was written by an earlier version)"


def _describe(position: dict[str, Any], path: Path | None) -> str:
    if "sha" in position:
        return f"file {path or '?'} sha {position['sha']} ({position.get('size', '?')} bytes)"
    return "cursor " + orjson.dumps(position).decode()
