"""`syncd quarantine list|replay|discard`: inspect and resolve records a source could not apply."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.table import Table

from syncd import quarantine as q
from syncd.cli.console import (
    Column,
    CommandGroup,
    config_option,
    grid,
    load_config,
    on_connection,
    out,
    stream_names,
)
from syncd.database import Connection
from syncd.errors import ProblemFound


@click.group("quarantine", cls=CommandGroup)
def quarantine_group() -> None:
    """Records held back (invalid, keyless, duplicate ids); a held record blocks its key.

    Fix the record at its source (the LowDB file, through its API), then `replay` it: the key
    unblocks and the stream applies the file's current version within a second. `discard` also
    unblocks the key (use it when the record was removed or should be dropped).
    """


@quarantine_group.command("list")
@config_option
@click.option("--stream", default=None, help="Only this stream (LowDB entry name).")
@click.option("--all", "all_statuses", is_flag=True, help="Also replayed and discarded records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, raw record included.")
@click.option("--limit", type=int, default=100, show_default=True)
def list_command(config_path: Path | None, stream: str | None, all_statuses: bool, as_json: bool, limit: int) -> None:
    """Show quarantined records, newest first (held ones unless --all)."""

    configured = stream_names(load_config(config_path))

    async def work(conn: Connection) -> list[q.Entry]:
        if stream is not None and stream not in configured:
            known = configured | await q.streams(conn)
            if stream not in known:
                listing = ", ".join(sorted(known)) or "none"
                raise click.BadParameter(
                    f"{stream!r} is no stream of this config nor of syncd.quarantine (streams: {listing})",
                    param_hint="--stream",
                )
        return await q.list_entries(conn, stream=stream, status=None if all_statuses else "held", limit=limit)

    entries = on_connection(config_path, work)
    if as_json:
        for e in entries:
            click.echo(orjson.dumps(_entry_json(e)).decode())
        return
    out().print(_table(entries))


def _entry_json(e: q.Entry) -> dict[str, object]:
    return {
        "id": e.id,
        "stream": e.stream,
        "table": e.table_name,
        "key": e.key,
        "status": e.status,
        "reason": e.reason,
        "created_at": e.created_at.isoformat(),
        "raw": e.raw,
    }


QUARANTINE_COLUMNS = (Column("id, status, UTC", keep=True), Column("stream, table, key", keep=True), Column("reason"))


def _table(entries: list[q.Entry]) -> Table:
    """One row per record, its facts stacked in cells, so the reason keeps a third of 80 columns."""
    rows = [
        (
            f"{e.id} {e.status}\n{e.created_at:%Y-%m-%d}\n{e.created_at:%H:%M:%S}",
            f"{e.stream}\n{e.table_name}\n{e.key}",
            e.reason,
        )
        for e in entries
    ]
    return grid(f"syncd quarantine ({len(entries)} shown)", QUARANTINE_COLUMNS, rows)


def _resolve(config_path: Path | None, ids: tuple[int, ...], resolution: q.Resolution) -> None:
    """Resolve the held ones of `ids`: an unknown id changes nothing (exit 2), one not held is left alone (exit 1)."""

    async def work(conn: Connection) -> tuple[list[int], dict[int, str]]:
        async with conn.transaction():
            found = await q.statuses(conn, ids)
            unknown = sorted(set(ids) - set(found))
            if unknown:
                raise click.BadParameter(
                    f"no quarantine record with id {', '.join(map(str, unknown))}; "
                    "nothing was changed (see syncd quarantine list --all)",
                    param_hint="IDS",
                )
            return await q.resolve(conn, ids, resolution), found

    done, found = on_connection(config_path, work)
    click.echo(f"{resolution} {len(done)} record(s)" + (f": {', '.join(map(str, done))}" if done else ""))
    skipped = [f"{i} ({found[i]})" for i in sorted(set(ids) - set(done))]
    if skipped:
        raise ProblemFound(f"not held, left alone: {', '.join(skipped)}")


@quarantine_group.command("replay")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
def replay_command(config_path: Path | None, ids: tuple[int, ...]) -> None:
    """Unblock the keys of held records IDS: the stream re-applies them from the file (re-quarantined if still bad)."""
    _resolve(config_path, ids, "replayed")


@quarantine_group.command("discard")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
def discard_command(config_path: Path | None, ids: tuple[int, ...]) -> None:
    """Drop held records IDS; their keys unblock and follow the file again."""
    _resolve(config_path, ids, "discarded")
