"""`syncd doctor [--bundle FILE]`: one table of checks with a verdict and a fix per line; exit 1 if any fails."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from syncd import doctor
from syncd.cli.console import EXIT_CLEAN, EXIT_MISMATCH, Column, config_option, grid, load_config, out, run_async
from syncd.errors import ConfigError
from syncd.version import VERSION

COLUMNS = (Column("check", keep=True), Column("verdict", keep=True), Column("found, and the fix to try"))
_STYLE = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


@click.command("doctor")
@config_option
@click.option("--bundle", type=click.Path(dir_okay=False, path_type=Path), help="Also write a redacted .tar.gz.")
@click.option("--logs", "logs_from", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A log file whose last MiB goes into the bundle (repeatable).")  # fmt: skip
def doctor_command(config_path: Path | None, bundle: Path | None, logs_from: tuple[Path, ...]) -> None:
    """Check config, PostgreSQL (reachable, version, privileges, clock), migrations, LowDB files and
    directories, QuestDB (reachable, clock) and the HTTP port; exit 1 if any check fails.

    --bundle FILE packs the checks, the config (passwords removed), /status and /metrics of a
    running daemon, versions, PostgreSQL settings and the --logs files into FILE for a support request.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        out().print(grid(f"syncd doctor {VERSION}", COLUMNS, [("config", "FAIL", f"{exc}\n→ fix the key it names")]))
        sys.exit(EXIT_MISMATCH)
    report = run_async(doctor.examine(config))
    rows = [(c.name, _STYLE[c.verdict], c.detail + (f"\n→ {c.fix}" if c.fix else "")) for c in report.checks]
    out().print(grid(f"syncd doctor {VERSION}", COLUMNS, rows))
    if bundle is not None:
        doctor.write_bundle(bundle, config, report, logs_from=logs_from)
        click.echo(f"bundle written: {bundle} (passwords redacted)")
    failed = sum(c.verdict == "fail" for c in report.checks)
    warned = sum(c.verdict == "warn" for c in report.checks)
    click.echo(f"{len(report.checks)} checks: {failed} failed, {warned} warning(s)")
    sys.exit(EXIT_MISMATCH if report.failed else EXIT_CLEAN)
