"""`syncd backup` and `syncd restore`: pg_dump/pg_restore of the synced schemas, LowDB copies, a manifest."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli.console import config_option, load_config, run_async
from syncd.cutover import backup as backups


@click.command()
@config_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
def backup(config_path: Path | None, out: Path) -> None:
    """pg_dump -Fc of the synced schemas, a copy of each LowDB file and a manifest, into OUT."""
    config = load_config(config_path)
    manifest = run_async(backups.backup(config.postgres.dsn.get_secret_value(), out, config.lowdb))
    rows = sum(t["rows"] for t in manifest.tables.values())
    click.echo(f"backup {out}: {len(manifest.tables)} tables, {rows} rows, {len(manifest.files)} LowDB file(s)")


@click.command()
@config_option
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
def restore(config_path: Path | None, source: Path) -> None:
    """pg_restore SOURCE into the configured (empty) database, then check every table against the manifest."""
    config = load_config(config_path)
    manifest = run_async(backups.restore(config.postgres.dsn.get_secret_value(), source))
    click.echo(f"restored {source}: {len(manifest.tables)} tables match the manifest")
    for name, entry in manifest.files.items():
        click.echo(f"LowDB copy of {name} ({entry['path']}): {source / backups.LOWDB_DIR / (name + '.json')}")
