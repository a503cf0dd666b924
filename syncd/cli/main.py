"""`syncd` itself and `syncd run|migrate|status`; every other command group has a module of its own."""

from __future__ import annotations

import platform
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console, Group
from rich.text import Text

from syncd import logs
from syncd import migrate as migrations
from syncd.cli import audit, backfill, backup, cutover, doctor, explain, quarantine, verify
from syncd.cli.console import (
    EXIT_CLEAN,
    EXIT_MISMATCH,
    Boundary,
    Column,
    config_option,
    debug_requested,
    grid,
    load_config,
    on_connection,
    out,
    run_async,
)
from syncd.cli.summary import summary_table, summary_title
from syncd.errors import Unreachable
from syncd.version import VERSION

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", "-V", message=f"syncd %(version)s (Python {platform.python_version()})")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True)
@click.option("--debug", is_flag=True, help="On a failure, print the traceback as well as the one-line error.")
def main(log_level: str, log_format: str, debug: bool) -> None:
    """syncd: LowDB and QuestDB into PostgreSQL, with a reversible cutover.

    Every command exits 0 when done, 1 when it ran and found a problem (a verify mismatch, a
    refusal, pending migrations), 2 when it could not run (bad argument or config, a server
    unreachable, authentication failed, a file missing), with one line on stderr saying what.
    """
    debug_requested(debug)
    logs.configure(log_level, json=log_format == "json")


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the daemon until SIGTERM/SIGINT.

    Logs are JSON lines on stderr; on a terminal, each stream's initial load also ends with its
    summary table there (under its `initial load done` line)."""
    from syncd.daemon import Daemon

    config = load_config(config_path)
    report = print_initial_load if sys.stderr.isatty() else None
    run_async(Daemon(config, on_load=report).serve())


def print_initial_load(stream: str, summary: Mapping[str, Any]) -> None:
    """A stream's initial-load table on stderr: for a person at the terminal (files and journald
    get the JSON line only, so `jq` keeps working)."""
    title = summary_title(f"syncd: initial load of {stream}", summary)
    Console(stderr=True).print(summary_table(title, {stream: summary}))


@main.command()
@config_option
@click.option("--status", "show_status", is_flag=True, help="List applied, pending and edited migrations; apply none.")
@click.option("--dry-run", is_flag=True, help="Apply the pending migrations in a transaction, then roll it back.")
def migrate(config_path: Path | None, show_status: bool, dry_run: bool) -> None:
    """Apply pending schema migrations (idempotent, checksummed, under an advisory lock).

    --status exits 1 when a migration is pending or was edited after it was applied.
    """
    if show_status and dry_run:
        raise click.UsageError("--status and --dry-run exclude each other")
    if show_status:
        states = on_connection(config_path, migrations.status)
        _print_migration_status(states)
        sys.exit(EXIT_CLEAN if all(s.state == "applied" for s in states) else EXIT_MISMATCH)
    if dry_run:
        would: list[str] = on_connection(config_path, migrations.dry_run)
        click.echo(
            f"would apply {len(would)} migration(s)"
            + (": " + ", ".join(would) if would else "")
            + ("; each applied cleanly in a transaction that was rolled back" if would else "")
        )
        return

    applied: list[str] = on_connection(config_path, migrations.migrate)
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def _print_migration_status(states: list[migrations.MigrationStatus]) -> None:
    counts = {state: sum(s.state == state for s in states) for state in ("applied", "pending", "edited", "unknown")}
    rows = [(s.version, s.state, "-" if s.applied_at is None else f"{s.applied_at:%Y-%m-%d %H:%M:%S}") for s in states]
    columns = (Column("migration", keep=True), Column("state", keep=True), Column("applied at", keep=True))
    out().print(grid("syncd migrate --status", columns, rows))
    click.echo(", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "unknown"))


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw /status document.")
@click.option("--loads", is_flag=True, help="Also the initial loads' summary: per stream and table, like pgloader's.")
def status(config_path: Path | None, as_json: bool, loads: bool) -> None:
    """Show the running daemon's /status as a table; exit 2 when it cannot be reached."""
    config = load_config(config_path)
    url = f"http://{config.http.host}:{config.http.port}/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            document = orjson.loads(response.read())
    except OSError as exc:
        raise Unreachable(f"status endpoint {url}", str(getattr(exc, "reason", exc))) from exc
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    out().print(status_table(document))
    if loads:
        out().print(loads_table(document))


STATUS_COLUMNS = (
    Column("stream", keep=True),
    Column("owner@epoch", keep=True),
    Column("mode", keep=True),
    Column("up"),
    Column("caught up"),
    Column("lag s", right=True),
    Column("held", right=True),
)
"""What fits 80 columns beside the owner. Restarts and the last error follow the table, one line per
stream that has either; `caught up` shows a first load's percent and ETA (`42% 12s`); its rows read and
applied, rows applied and seconds since the last success are in `syncd status --json`."""


def status_table(document: dict[str, Any]) -> Group:
    """Render a /status document: one table row per stream with its owner (streams another instance
    runs show only their owner and epoch), then a line per stream that restarted or has an error."""
    role = "leader" if document.get("leader") else "standby"
    members = ", ".join(document.get("members", [])) or "-"
    title = f"syncd {document.get('version', '?')} {document.get('instance', '?')} ({role}; members: {members})"
    owners: dict[str, dict[str, Any]] = document.get("owners", {})
    streams: dict[str, dict[str, Any]] = document.get("streams", {})
    rows = []
    for name in sorted(owners.keys() | streams.keys()):
        owner = owners.get(name, {})
        lease = f"{owner.get('holder') or '-'}@{owner.get('epoch', '-')}"
        stream = streams.get(name)
        if stream is None:
            rows.append((name, lease, "-", "", "", "", ""))
            continue
        rows.append(
            (
                name,
                lease,
                str(stream.get("mode")),
                "yes" if stream.get("source_up", True) else "NO",
                "yes" if stream.get("caught_up") else _catching_up(stream.get("catch_up") or {}),
                _seconds(stream.get("event_lag_seconds")),
                str(stream.get("quarantined", 0)),
            )
        )
    notes = [Text(note) for name, stream in streams.items() if (note := _trouble(name, stream))]
    return Group(grid(title, STATUS_COLUMNS, rows), *notes)


def loads_table(document: dict[str, Any]) -> Group:
    """The initial loads done (pgloader's table), then a line per stream whose load is still running."""
    streams: dict[str, dict[str, Any]] = document.get("streams", {})
    done = {name: s["initial_load"] for name, s in sorted(streams.items()) if s.get("initial_load")}
    running = [
        Text(f"{name}: initial load under way, {_under_way(s.get('catch_up') or {})}")
        for name, s in sorted(streams.items())
        if not (s.get("initial_load") or s.get("caught_up"))
    ]
    return Group(summary_table(f"initial loads: {len(done)} done", done), *running)


def _under_way(progress: dict[str, Any]) -> str:
    """`42% 12s: 42000 of 100000 read, 0 staged, 0 applied` (the parts known)."""
    total = progress.get("total")
    counts = [f"{progress.get('read', 0)}" + ("" if total is None else f" of {total}") + " read"]
    if progress.get("staged") is not None:
        counts.append(f"{progress['staged']} staged")
    counts.append(f"{progress.get('applied', 0)} applied")
    return f"{_catching_up(progress)}: {', '.join(counts)}"


def _trouble(name: str, stream: dict[str, Any]) -> str:
    """`name: N restarts; last error: …` for a stream that restarted or has an error, else ''."""
    restarts = stream.get("restarts", 0)
    parts = [f"{restarts} restart" + ("s" if restarts > 1 else "")] if restarts else []
    if stream.get("last_error"):
        parts.append(f"last error: {stream['last_error']}")
    return f"{name}: " + "; ".join(parts) if parts else ""


def _catching_up(progress: dict[str, Any]) -> str:
    """`no`, or the first load's percent and ETA when known: `42% 12s` (narrow: 80 columns)."""
    if progress.get("percent") is None:
        return "no"
    eta = progress.get("eta_seconds")
    # Floored: a load short of its commit never reads 100%.
    return f"{int(progress['percent'])}%" + ("" if eta is None else f" {eta:.0f}s")


def _seconds(value: float | None) -> str:
    """Seconds in at most 6 characters: 0.012, 9.87, 948, 12345."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.0f}"


for command in (
    backfill.backfill,
    backup.backup,
    backup.restore,
    cutover.cutover_group,
    quarantine.quarantine_group,
    audit.audit_command,
    doctor.doctor_command,
    explain.explain_command,
    verify.verify,
):
    main.add_command(command)
