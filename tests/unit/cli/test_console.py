"""The boundary's mapping of a failure to its one line and exit code (the CLI runs are in tests/integration/cli)."""

from __future__ import annotations

import errno
from pathlib import Path

import asyncpg
import click
import pytest

from syncd.cli.console import EXIT_INTERRUPTED, EXIT_MISMATCH, describe, resolve_files
from syncd.config import Config
from syncd.errors import BackupError, ConfigError, CutoverRefused, MigrationError, ProblemFound, RetriesExhausted

DSN = "postgresql://syncd:***@db:5432/x"


@pytest.mark.parametrize(
    ("exc", "line", "code"),
    [
        (
            CutoverRefused("workspace", ["lag: 3s", "verify: 1 row"]),
            "cutover of workspace refused: lag: 3s; verify: 1 row",
            1,
        ),
        (MigrationError("0001_x.sql", "was edited"), "migration 0001_x.sql: was edited", 1),
        (ProblemFound("not held, left alone: 4 (replayed)"), "not held, left alone: 4 (replayed)", 1),
        (BackupError("manifest", "t: differs"), "manifest: t: differs", 1),
        (BackupError("pg_dump", "exit 1: boom"), "pg_dump: exit 1: boom", 2),
        (
            ConfigError("http.listen", "env SYNCD_HTTP_LISTEN", "bad"),
            "config http.listen (from env SYNCD_HTTP_LISTEN): bad",
            2,
        ),
        (
            RetriesExhausted("source questdb unavailable: refused", 4, 60.2),
            "gave up after 4 attempt(s) in 60s: source questdb unavailable: refused",
            2,
        ),
        (
            asyncpg.InvalidPasswordError("password authentication failed"),
            f"PostgreSQL at {DSN}: authentication failed: password authentication failed",
            2,
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/manifest.json"),
            "/x/manifest.json: No such file or directory",
            2,
        ),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
            f"cannot connect to PostgreSQL at {DSN}: [Errno 111] Connect call failed",
            2,
        ),
        (TimeoutError(), f"cannot connect to PostgreSQL at {DSN}: TimeoutError", 2),
        (click.BadParameter("no such id", param_hint="IDS"), "Invalid value for IDS: no such id (see --help)", 2),
        (KeyboardInterrupt(), "interrupted", EXIT_INTERRUPTED),
        (
            OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 9187): address in use"),
            "cannot listen: [Errno 98] error while attempting to bind on address ('127.0.0.1', 9187): address in use",
            2,
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "OSError: [Errno 28] No space left on device", 2),
        (
            ZeroDivisionError("division by zero"),
            "unexpected ZeroDivisionError: division by zero (syncd --debug … shows the traceback)",
            2,
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_each_failure_maps_to_its_line_and_code(exc: BaseException, line: str, code: int) -> None:
    assert describe(exc, DSN) == (line, code)


def test_a_closed_pipe_is_silent() -> None:
    """`syncd status | head -1`: the reader left; nothing to say, not a crash."""
    message, code = describe(BrokenPipeError(errno.EPIPE, "Broken pipe"), DSN)
    assert message is None
    assert code == EXIT_MISMATCH


def test_a_lowdb_file_is_named_by_entry_table_or_path_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NAME is the entry name, a table name bare or qualified, or the path: absolute, or as written
    in the config (relative to the config file) whatever the working directory."""
    etc = tmp_path / "etc"
    (etc / "data").mkdir(parents=True)
    config_path = etc / "syncd.toml"
    config_path.write_text(
        '[postgres]\ndsn = "postgresql://x@h/db"\n'
        '[[lowdb]]\nname = "workspace"\npath = "data/library.json"\nlayout = "workspace"\n'
        '[[lowdb]]\nname = "docs"\npath = "data/db.json"\nlayout = "documentation"\n'
    )
    config = Config.load(config_path, {})
    monkeypatch.chdir(tmp_path)
    for name in ("workspace", "workspace_items", "workspace.workspace_items", "workspace_categories",
                 "data/library.json", str(etc / "data" / "library.json"), "etc/data/library.json"):
        assert [e.name for e in resolve_files(config, [name], config_path)] == ["workspace"], name
    assert [e.name for e in resolve_files(config, ["documentation_ideas"], config_path)] == ["docs"]
    with pytest.raises(click.BadParameter, match="'nope' is no LowDB entry, file or table"):
        resolve_files(config, ["nope"], config_path)
