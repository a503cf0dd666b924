"""`syncd quarantine list|replay|discard|accept`: inspect and resolve records a source could not apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.table import Table

from syncd import coercion
from syncd import quarantine as q
from syncd.cli.console import (
    Column,
    CommandGroup,
    actor,
    config_option,
    grid,
    load_config,
    on_connection,
    out,
    stream_names,
)
from syncd.config import Config
from syncd.database import Connection
from syncd.errors import BadCoercion, NotAcceptable, ProblemFound
from syncd.lowdb.diff import quarantine_table
from syncd.tables import TableSpec, specs_for


@click.group("quarantine", cls=CommandGroup)
def quarantine_group() -> None:
    """Records held back (invalid, keyless, duplicate ids, rows PostgreSQL refused); a held record blocks its key.

    Fix the record at its source (the LowDB file, through its API), then `replay` it: the key
    unblocks and the stream applies the file's current version within a second. `discard` also
    unblocks the key (use it when the record was removed or should be dropped). `accept` resolves a
    record the service cannot fix with a stated coercion (`--set FIELD=VALUE`), audited.

    A QuestDB row (stream questdb:TABLE) was refused by PostgreSQL: fix the cause (the constraint,
    the trigger, or the row in QuestDB), then `replay` it and the stream reads it from QuestDB
    again; `discard` drops that version of the row for good.
    """


@quarantine_group.command("list")
@config_option
@click.option("--stream", default=None, help="Only this stream (LowDB entry name, or questdb:TABLE).")
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
        "resolved_at": None if e.resolved_at is None else e.resolved_at.isoformat(),
        "position": e.position,
        "raw": e.raw,
        "coercion": e.coercion,
    }


@quarantine_group.command("show")
@config_option
@click.argument("entry_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, raw record and position included.")
def show_command(config_path: Path | None, entry_id: int, as_json: bool) -> None:
    """Show one quarantined record whole: reason, where the source holds it, the record as it was read."""

    async def work(conn: Connection) -> q.Entry:
        found = (await q.entries(conn, [entry_id])).get(entry_id)
        if found is None:
            raise click.BadParameter(
                f"no quarantine record with id {entry_id} (see syncd quarantine list --all)", param_hint="ID"
            )
        return found

    e = _entry_json(on_connection(config_path, work))
    if as_json:
        click.echo(orjson.dumps(e).decode())
        return
    for name in ("id", "stream", "table", "key", "status", "created_at", "resolved_at", "reason"):
        click.echo(f"{name + ':':<13}{e[name]}")
    for name in ("position", "raw"):
        click.echo(f"{name}:")
        click.echo(orjson.dumps(e[name], option=orjson.OPT_INDENT_2).decode())


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
            _known(ids, found)
            return await q.resolve(conn, ids, resolution, actor=actor()), found

    done, found = on_connection(config_path, work)
    _report(resolution, done, {i: found[i] for i in set(ids) - set(done)})


def _known(ids: Sequence[int], found: Mapping[int, Any]) -> None:
    """An unknown id is a bad argument (exit 2), and nothing is changed."""
    unknown = sorted(set(ids) - set(found))
    if unknown:
        raise click.BadParameter(
            f"no quarantine record with id {', '.join(map(str, unknown))}; "
            "nothing was changed (see syncd quarantine list --all)",
            param_hint="IDS",
        )


def _report(resolution: str, done: Sequence[int], skipped: Mapping[int, str], stated: str = "") -> None:
    """What was resolved on stdout; records not held (left alone) are a problem found (exit 1)."""
    listing = f": {', '.join(map(str, done))}{stated}" if done else ""
    click.echo(f"{resolution} {len(done)} record(s){listing}")
    _left_alone(skipped)


def _left_alone(skipped: Mapping[int, str]) -> None:
    if skipped:
        raise ProblemFound(f"not held, left alone: {', '.join(f'{i} ({skipped[i]})' for i in sorted(skipped))}")


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


def _assignments(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for item in given:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param=param)
        pairs.append((name, value))
    return pairs


@quarantine_group.command("accept")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option(
    "--set",
    "sets",
    multiple=True,
    callback=_assignments,
    metavar="FIELD=VALUE",
    help="The value FIELD's column takes (text and timestamps as written, other kinds as JSON). Repeatable.",
)
@click.option(
    "--coerce",
    "rules",
    multiple=True,
    callback=_assignments,
    metavar="FIELD=RULE",
    help=f"A named coercion for FIELD: {', '.join(coercion.RULES)}. Repeatable.",
)
def accept_command(
    config_path: Path | None, ids: tuple[int, ...], sets: list[tuple[str, str]], rules: list[tuple[str, str]]
) -> None:
    """Accept held records IDS with a stated coercion, audited; the source file is not edited.

    The stream applies the held version with the stated values (the record's own values kept in
    `extra`) and keeps applying them while the file holds that version; a later change of the
    record at the source flows as usual. FIELD is the LowDB key (title, createdAt). Rules:
    default (the column's default, else NULL), null, now (a timestamp: the time of the accept).
    Accepting again with the same statement changes nothing (exit 0).
    """
    if not sets and not rules:
        raise click.UsageError("state a coercion: --set FIELD=VALUE or --coerce FIELD=RULE")
    config = load_config(config_path)
    now = datetime.now(UTC)
    who = actor()

    async def work(conn: Connection) -> tuple[list[int], list[int], dict[int, str], dict[str, Any]]:
        async with conn.transaction():
            found = await q.entries(conn, ids, lock=True)
            _known(ids, found)
            done, again, skipped = [], [], {}
            values: dict[str, Any] = {}
            for i in dict.fromkeys(ids):
                entry = found[i]
                spec = _spec_of(config, entry)
                values = coercion.stated(spec, sets, rules, now)
                if entry.status == "accepted" and entry.coercion == _as_accepted(values, entry.coercion, rules):
                    again.append(i)
                    continue
                if entry.status != "held":
                    skipped[i] = entry.status if entry.status != "accepted" else "accepted with other values"
                    continue
                coercion.check_acceptable(spec, entry)
                _, digest = coercion.accepted_row(spec, entry, values)
                await q.accept(conn, entry, values, digest, actor=who)
                done.append(i)
            return done, again, skipped, values

    done, again, skipped, values = on_connection(config_path, work)
    if again:
        click.echo(f"already accepted with this coercion, nothing changed: {', '.join(map(str, again))}")
    if done or not again:
        stated = " with " + ", ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in values.items())
        _report("accepted", done, skipped, stated)
    _left_alone(skipped)


def _spec_of(config: Config, entry: q.Entry) -> TableSpec:
    """The table spec of a quarantined record, from the LowDB entry of its stream."""
    if entry.stream.startswith("questdb:"):
        # QuestDB stays the truth for its rows: a stated value would differ from it for ever.
        raise NotAcceptable(entry.id, "it is a QuestDB row; fix the cause and replay it, or discard it")
    settings = next((e for e in config.lowdb if e.name == entry.stream), None)
    if settings is None:
        known = ", ".join(e.name for e in config.lowdb) or "none configured"
        raise BadCoercion(
            f"record {entry.id}", f"its stream {entry.stream!r} is no LowDB entry of this config (entries: {known})"
        )
    spec = next((s for s in specs_for(settings) if quarantine_table(s) == entry.table_name), None)
    if spec is None:
        raise BadCoercion(f"record {entry.id}", f"{entry.table_name} is no table of LowDB entry {entry.stream!r}")
    return spec


def _as_accepted(
    values: dict[str, Any], accepted: dict[str, Any] | None, rules: list[tuple[str, str]]
) -> dict[str, Any]:
    """`values` with each `now` taken as the time the record was accepted: the same statement again."""
    now_fields = {name for name, rule in rules if rule == "now"}
    return {k: (accepted or {}).get(k, v) if k in now_fields else v for k, v in values.items()}
