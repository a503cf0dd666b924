"""The CLI's error boundary: every failure of every command is one line naming what failed, and the
exit code DESIGN.md defines (1 ran and found a problem, 2 could not run); never a traceback, never a password."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import asyncpg
import pytest

from syncd.cluster import free_port, with_database
from syncd.cutover import backup as backups
from tests.integration.cli.conftest import syncd, write_config

PASSWORD = "s3cret-Pw"
LOWDB = '[[lowdb]]\nname = "workspace"\npath = "w.json"\nlayout = "workspace"\n'


@pytest.fixture
def configs(tmp_path: Path, pg_server: str, dsn: str, password_role: str) -> dict[str, Path]:
    """One config per server state: down, wrong password, missing database, healthy (migrated)."""
    port = int(pg_server.rsplit(":", 1)[1].split("/")[0])
    return {
        "down": write_config(tmp_path / "down.toml", f"postgresql://syncd:{PASSWORD}@127.0.0.1:{free_port()}/x"),
        "wrong-password": write_config(
            tmp_path / "pw.toml", f"postgresql://{password_role}:{PASSWORD}@127.0.0.1:{port}/postgres"
        ),
        "missing-db": write_config(tmp_path / "nodb.toml", with_database(pg_server, "no_such_database")),
        "ok": write_config(
            tmp_path / "ok.toml", dsn, '[[lowdb]]\nname = "workspace"\npath = "w.json"\nlayout = "workspace"\n'
        ),
    }


@pytest.fixture
async def backup_dir(tmp_path: Path, dsn: str) -> Path:
    """A real backup of a migrated database, to restore from."""
    out = tmp_path / "backup"
    await backups.backup(dsn, out, [])
    return out


DOWN = r"cannot connect to PostgreSQL at postgresql://syncd:\*\*\*@127\.0\.0\.1:\d+/x: .*Connect call failed"
AUTH = (
    r"PostgreSQL at postgresql://syncd_pw:\*\*\*@127\.0\.0\.1:\d+/postgres: authentication failed: "
    r'password authentication failed for user "syncd_pw"'
)
USAGE = r"Invalid value for '{}': .* \(see --help\)$"

# (config, arguments, the one line on stderr (regex), exit code); {backup} and {out} are filled in.
CASES = [
    ("down", ["migrate"], "syncd migrate: " + DOWN, 2),
    ("wrong-password", ["migrate"], "syncd migrate: " + AUTH, 2),
    ("down", ["migrate", "--status"], "syncd migrate: " + DOWN, 2),
    # `run` with PostgreSQL down does not exit: it serves /healthz, not ready, and keeps trying
    # (tests/e2e/test_pg_faults.py); a wrong password is a bad config, found at start.
    ("wrong-password", ["run"], "syncd run: " + AUTH, 2),
    ("down", ["cutover", "status"], "syncd cutover status: " + DOWN, 2),
    ("wrong-password", ["cutover", "status"], "syncd cutover status: " + AUTH, 2),
    ("down", ["backup", "--out", "{out}"], "syncd backup: " + DOWN, 2),
    ("wrong-password", ["backup", "--out", "{out}"], "syncd backup: " + AUTH, 2),
    (
        "missing-db",
        ["restore", "{backup}"],
        r"syncd restore: PostgreSQL at postgresql://postgres@127\.0\.0\.1:\d+/no_such_database: "
        r'\[3D000\] database "no_such_database" does not exist',
        2,
    ),
    ("ok", ["backfill", "questdb", "--table", "nope"], "syncd backfill questdb: " + USAGE.format("--table"), 2),
    (
        "ok",
        ["backfill", "questdb", "--table", "tp_capital_signals", "--from", "yesterday"],
        "syncd backfill questdb: Invalid value for '--from': 'yesterday' is neither a day .* \\(see --help\\)$",
        2,
    ),
    ("ok", ["--log-level", "bogus", "migrate"], "syncd: " + USAGE.format("--log-level"), 2),
    (
        "ok",
        ["quarantine", "replay", "999"],
        r"syncd quarantine replay: Invalid value for IDS: no quarantine record with id 999; nothing was changed",
        2,
    ),
    ("ok", ["quarantine", "discard", "998", "999"], r"no quarantine record with id 998, 999", 2),
    ("ok", ["quarantine", "accept", "999", "--set", "title=x"], r"no quarantine record with id 999; nothing", 2),
    ("ok", ["quarantine", "accept", "999", "--set", "title"], r"Invalid value for '--set': 'title' is not FIELD=V", 2),
    (
        "ok",
        ["quarantine", "list", "--stream", "nope"],
        r"syncd quarantine list: Invalid value for --stream: 'nope' is no stream of this config nor of "
        r"syncd.quarantine \(streams: workspace\)",
        2,
    ),
    ("ok", ["audit", "nope", "1"], r"syncd audit: table 'nope' is not an audited table \(audited tables: ", 2),
    ("ok", ["cutover", "promote", "nope"], r"syncd cutover promote: Invalid value: 'nope' is no LowDB entry", 2),
    ("ok", ["status"], r"syncd status: status endpoint http://127\.0\.0\.1:\d+/status unreachable: ", 2),
    ("ok", ["migrate", "--status", "--dry-run"], r"syncd migrate: --status and --dry-run exclude each other", 2),
    ("ok", ["nosuch"], r"syncd: No such command 'nosuch'\. \(see --help\)", 2),
]


@pytest.mark.parametrize(("state", "args", "line", "rc"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_every_failure_is_one_line_and_its_exit_code(
    request: pytest.FixtureRequest,
    configs: dict[str, Path],
    tmp_path: Path,
    state: str,
    args: list[str],
    line: str,
    rc: int,
) -> None:
    out = tmp_path / "new" / "backup"
    backup = request.getfixturevalue("backup_dir") if "{backup}" in args else None
    filled = [a.format(backup=backup, out=out) for a in args]
    env = {"SYNCD_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}
    ran = syncd(*filled, "--config", configs[state], env=env)
    ran.assert_one_error_line()
    assert ran.rc == rc, ran.stderr
    assert re.search(line, ran.error_line), ran.error_line
    assert PASSWORD not in ran.stderr + ran.stdout
    assert not (tmp_path / "new").exists(), "a failed backup left what it created"


def test_run_on_a_taken_port_is_one_line(configs: dict[str, Path]) -> None:
    """`syncd run` whose http.listen is taken: one line naming the address, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = syncd("run", "--config", configs["ok"], env={"SYNCD_HTTP_LISTEN": f"127.0.0.1:{port}"}, timeout=60)
    ran.assert_one_error_line()
    assert ran.rc == 2
    assert re.search(rf"^syncd run: http\.listen 127\.0\.0\.1:{port}: cannot listen: .*in use", ran.error_line), (
        ran.error_line
    )


def test_debug_adds_the_traceback(configs: dict[str, Path]) -> None:
    ran = syncd("--debug", "migrate", "--config", configs["down"])
    assert ran.rc == 2
    assert "Traceback (most recent call last)" in ran.stderr
    assert re.search("syncd migrate: " + DOWN, ran.error_line)


def test_backfill_without_questdb_gives_up_after_retry_for(configs: dict[str, Path]) -> None:
    """No [questdb] and nothing listening: bounded retries, then one line naming QuestDB, exit 2."""
    env = {"QUESTDB_HOST": "127.0.0.1", "QUESTDB_HTTP_PORT": str(free_port())}
    ran = syncd(
        "backfill",
        "questdb",
        "--table",
        "tp_capital_signals",
        "--retry-for",
        "1s",
        "--no-progress",
        "--config",
        configs["ok"],
        env=env,
    )
    ran.assert_one_error_line()
    assert ran.rc == 2
    assert re.search(
        r"^syncd backfill questdb: gave up after \d+ attempt\(s\) in \ds: source questdb unavailable: "
        r".*127\.0\.0\.1:\d+.* \(no \[questdb\] in the config: 127\.0\.0\.1:\d+ is from QUESTDB_\*\)$",
        ran.error_line,
    ), ran.error_line
    assert ran.stdout == ""


def test_backup_into_an_existing_empty_directory_leaves_it_empty(configs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    ran = syncd("backup", "--out", out, "--config", configs["down"])
    assert ran.rc == 2
    assert out.is_dir()
    assert list(out.iterdir()) == []


async def test_replaying_a_record_not_held_is_a_problem_found(configs: dict[str, Path], dsn: str) -> None:
    """A known id that is no longer held: the held ones are resolved, the others named, exit 1."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [
            await conn.fetchval(
                """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, status)
                   VALUES ('lowdb', 'workspace', 'workspace.workspace_items', $1, '{}', 'test', $2) RETURNING id""",
                key,
                status,
            )
            for key, status in (("a", "held"), ("b", "discarded"))
        ]
    finally:
        await conn.close()
    ran = syncd("quarantine", "replay", *map(str, ids), "--config", configs["ok"])
    assert ran.rc == 1, ran.stderr
    assert ran.stdout.strip() == f"replayed 1 record(s): {ids[0]}"
    assert ran.error_line == f"syncd quarantine replay: not held, left alone: {ids[1]} (discarded)"
    listed = syncd("quarantine", "list", "--stream", "workspace", "--all", "--config", configs["ok"])
    assert listed.rc == 0, listed.stderr
