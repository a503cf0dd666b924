"""`syncd --version`, `syncd migrate [--status | --dry-run]`: their output and exit codes on a real database."""

from __future__ import annotations

import platform
from pathlib import Path

import asyncpg

from syncd.migrate import discover
from syncd.version import VERSION
from tests.integration.cli.conftest import syncd


def test_version() -> None:
    ran = syncd("--version")
    assert ran.rc == 0
    assert ran.stdout == f"syncd {VERSION} (Python {platform.python_version()})\n"


def test_shell_completion_as_the_readme_sets_it_up() -> None:
    """The README's `eval "$(_SYNCD_COMPLETE=bash_source syncd)"` line: bash sources the script, and
    completing `syncd status --` offers the command's options."""
    script = syncd(env={"_SYNCD_COMPLETE": "bash_source"})
    assert script.rc == 0
    assert "complete -o nosort -F _syncd_completion syncd" in script.stdout
    words = syncd(env={"_SYNCD_COMPLETE": "bash_complete", "COMP_WORDS": "syncd status --", "COMP_CWORD": "2"})
    assert {"plain,--loads", "plain,--json", "plain,--config"} <= set(words.stdout.splitlines())
    commands = syncd(env={"_SYNCD_COMPLETE": "bash_complete", "COMP_WORDS": "syncd ex", "COMP_CWORD": "1"})
    assert commands.stdout.splitlines() == ["plain,explain"]


async def test_status_dry_run_then_migrate(empty_dsn: str, tmp_path: Path) -> None:
    """Fresh database: all pending (exit 1); a dry run applies nothing; migrate; all applied (exit 0)."""
    env = {"SYNCD_PG_DSN": empty_dsn}
    total = len(discover())
    fresh = syncd("migrate", "--status", env=env)
    assert fresh.rc == 1, fresh.stderr
    assert fresh.stdout.splitlines()[-1] == f"0 applied, {total} pending, 0 edited"
    assert discover()[0].version in fresh.stdout

    dry = syncd("migrate", "--dry-run", env=env)
    assert dry.rc == 0, dry.stderr
    assert dry.stdout.startswith(f"would apply {total} migration(s): {discover()[0].version}, ")
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('syncd.schema_migrations')") is None, "dry run changed the db"
    finally:
        await conn.close()

    applied = syncd("migrate", env=env)
    assert applied.rc == 0, applied.stderr
    assert applied.stdout.startswith(f"applied {total} migration(s)")
    done = syncd("migrate", "--status", env=env)
    assert done.rc == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"{total} applied, 0 pending, 0 edited"
    assert syncd("migrate", "--dry-run", env=env).stdout == "would apply 0 migration(s)\n"


async def test_an_edited_migration_is_shown_and_refused(dsn: str) -> None:
    """A recorded checksum that differs from the file: `edited` in --status (exit 1), dry run and migrate refuse."""
    first = discover()[0].version
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE syncd.schema_migrations SET checksum = 'feed' WHERE version = $1", first)
        await conn.execute("INSERT INTO syncd.schema_migrations (version, checksum) VALUES ('9999_future', 'x')")
    finally:
        await conn.close()
    env = {"SYNCD_PG_DSN": dsn}
    status = syncd("migrate", "--status", env=env)
    assert status.rc == 1
    assert status.stdout.splitlines()[-1] == f"{len(discover()) - 1} applied, 0 pending, 1 edited, 1 unknown"
    for args in (["migrate", "--dry-run"], ["migrate"]):
        refused = syncd(*args, env=env)
        assert refused.rc == 1
        assert refused.error_line.startswith(f"syncd migrate: migration {first}.sql: was edited after it was applied")
