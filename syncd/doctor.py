"""`syncd doctor`: check a deployment end to end, and pack a redacted support bundle.

Each check is one line: what was checked, a verdict (ok, warn, fail), what was found and the fix to
try. Checks that need PostgreSQL are skipped (and say so) when it cannot be reached, so one cause
shows as one failure. Nothing here writes to PostgreSQL, QuestDB or the LowDB files.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import asyncpg
import orjson

from syncd import logs
from syncd.config import Config
from syncd.database import connect
from syncd.errors import SyncdError
from syncd.migrate import status as migration_status
from syncd.version import build_info, component_versions

Verdict = Literal["ok", "warn", "fail"]
MIN_SERVER_VERSION = 150000
SKEW_WARN_SECONDS = 1.0
SKEW_FAIL_SECONDS = 30.0
# Tables syncd writes: the role in the DSN needs these privileges on each of them.
_WRITE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
_SCHEMAS = ("workspace", "documentation", "signals", "syncd")
# Settings worth seeing in a bundle; none of them holds a secret.
_SETTINGS = (
    "server_version", "max_connections", "shared_buffers", "work_mem", "maintenance_work_mem", "wal_level",
    "synchronous_commit", "max_wal_size", "checkpoint_timeout", "idle_in_transaction_session_timeout",
    "statement_timeout", "lock_timeout", "TimeZone", "shared_preload_libraries", "server_encoding",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's table."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """Every check, plus what a support bundle carries besides them."""

    checks: list[Check]
    settings: dict[str, str]

    @property
    def failed(self) -> bool:
        """True when any check failed."""
        return any(c.verdict == "fail" for c in self.checks)


async def examine(config: Config) -> Report:
    """Run every check against the configured deployment (read-only)."""
    checks: list[Check] = [_config_check(config)]
    settings: dict[str, str] = {}
    dsn = config.postgres.dsn.get_secret_value()
    try:
        conn = await connect(dsn, timeout=config.postgres.connect_timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        checks.append(Check("postgresql", "fail", f"{logs.redact(dsn)}: {exc}", _connect_fix(exc)))
        checks.append(Check("migrations", "warn", "not checked: PostgreSQL unreachable"))
    else:
        try:
            checks += await _postgres_checks(conn, logs.redact(dsn))
            settings = await _settings(conn)
        finally:
            await conn.close()
    checks += [c for entry in config.lowdb for c in _lowdb_checks(entry.name, entry.path)]
    if config.questdb is not None:
        checks.append(await _questdb_check(config))
    checks.append(await asyncio.to_thread(_port_check, config.http.host, config.http.port))
    return Report(checks, settings)


def _config_check(config: Config) -> Check:
    streams = [e.name for e in config.lowdb] + (
        [f"questdb:{t}" for t in config.questdb.tables] if config.questdb else []
    )
    try:
        from syncd.registry import check_lowdb_targets

        check_lowdb_targets(config)
    except SyncdError as exc:
        return Check("config", "fail", str(exc), "give each [[lowdb]] entry its own name and tables")
    return Check("config", "ok", f"valid; streams: {', '.join(streams) or 'none'}")


def _connect_fix(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return "check the user and password of postgres.dsn (SYNCD_PG_DSN) and pg_hba.conf"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "create the database (createdb) or fix the database name in postgres.dsn"
    return "start PostgreSQL, or fix host/port of postgres.dsn (try: pg_isready -h HOST -p PORT)"


async def _postgres_checks(conn: asyncpg.Connection, shown: str) -> list[Check]:
    version: int = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    text: str = await conn.fetchval("SELECT current_setting('server_version')")
    checks = [
        Check("postgresql", "ok", f"{shown}: PostgreSQL {text}"),
        Check("postgresql version", "ok", f"{text} (15 or later needed)")
        if version >= MIN_SERVER_VERSION
        else Check("postgresql version", "fail", f"{text}: syncd needs PostgreSQL 15+", "upgrade PostgreSQL to 15+"),
        await _clock_check(conn),
    ]
    states = await migration_status(conn)
    pending = [s.version for s in states if s.state == "pending"]
    edited = [s.version for s in states if s.state == "edited"]
    if edited:
        checks.append(Check("migrations", "fail", f"edited after applied: {', '.join(edited)}",
                            "restore the original files; put changes in a new migration"))  # fmt: skip
    elif pending:
        shown = ", ".join(pending[:3]) + (" …" if len(pending) > 3 else "")
        checks.append(Check("migrations", "fail", f"{len(pending)} pending: {shown}", "syncd migrate"))
    else:
        checks.append(Check("migrations", "ok", f"all {len(states)} applied"))
    checks.append(await _privilege_check(conn, bool(pending)))
    return checks


async def _clock_check(conn: asyncpg.Connection) -> Check:
    before = time.time()
    server: datetime = await conn.fetchval("SELECT clock_timestamp()")
    skew = server.timestamp() - (before + time.time()) / 2
    return _skew("clock skew (postgresql)", skew)


def _skew(name: str, skew: float) -> Check:
    detail = f"{skew:+.3f} s (server minus this host)"
    if abs(skew) >= SKEW_FAIL_SECONDS:
        return Check(name, "fail", detail, "synchronise the clocks (chrony/ntp on both hosts)")
    if abs(skew) >= SKEW_WARN_SECONDS:
        return Check(name, "warn", detail, "synchronise the clocks (chrony/ntp on both hosts)")
    return Check(name, "ok", detail)


async def _privilege_check(conn: asyncpg.Connection, migrating: bool) -> Check:
    user: str = await conn.fetchval("SELECT current_user")
    if migrating and not await conn.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')"):
        return Check("privileges", "fail", f"{user} may not CREATE in this database (migrations need it)",
                     f"GRANT CREATE ON DATABASE <db> TO {user}, or run syncd migrate as the owner")  # fmt: skip
    lacking = await conn.fetch(
        """SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables
            WHERE schemaname = ANY($1) AND NOT has_table_privilege(format('%I.%I', schemaname, tablename), $2)
            ORDER BY 1""",
        list(_SCHEMAS),
        _WRITE_PRIVILEGES,
    )
    if lacking:
        names = ", ".join(r["t"] for r in lacking[:5]) + (" …" if len(lacking) > 5 else "")
        return Check("privileges", "fail", f"{user} lacks {_WRITE_PRIVILEGES} on {len(lacking)} table(s): {names}",
                     f"GRANT {_WRITE_PRIVILEGES} ON ALL TABLES IN SCHEMA … TO {user}")  # fmt: skip
    return Check("privileges", "ok", f"{user} may read and write every synced table")


def _lowdb_checks(name: str, path: Path) -> list[Check]:
    label = f"lowdb {name}"
    directory = path.parent
    if not directory.is_dir():
        return [Check(label, "fail", f"directory {directory} does not exist", f"mkdir -p {directory}, or fix path")]
    checks = []
    if not os.access(directory, os.W_OK | os.X_OK):
        checks.append(Check(f"{label} directory", "warn", f"{directory} is not writable by this user",
                            "the reverse path (pg-primary) writes .<name>.tmp there: chown/chmod it"))  # fmt: skip
    if not path.exists():
        checks.append(Check(label, "warn", f"{path} does not exist yet (nothing to apply)", "check the path"))
    elif not os.access(path, os.R_OK):
        checks.append(
            Check(label, "fail", f"{path} is not readable by this user", f"chmod o+r {path}, or run as its owner")
        )
    else:
        checks.append(_json_check(label, path))
    return checks


def _json_check(label: str, path: Path) -> Check:
    data = path.read_bytes()
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Check(label, "warn", f"{path}: not JSON right now ({exc})", "syncd retries; fix the file if it stays")
    kind = "an object" if isinstance(document, dict) else type(document).__name__
    verdict: Verdict = "ok" if isinstance(document, dict) else "fail"
    return Check(label, verdict, f"{path}: {len(data):,} bytes, {kind}", "" if verdict == "ok" else "restore the file")


async def _questdb_check(config: Config) -> Check:
    from syncd.questdb.reader import make_reader, parse_timestamp

    assert config.questdb is not None
    settings = config.questdb.model_copy(update={"request_timeout": min(config.questdb.request_timeout, 5.0)})
    reader = make_reader(settings)
    where = f"{settings.host}:{settings.http_port if settings.transport == 'http' else settings.pg_port}"
    try:
        before = time.time()
        result = await reader.query("SELECT now() FROM long_sequence(1)")
        value = result.rows[0][0]
        now = value if isinstance(value, datetime) else parse_timestamp(str(value))
        assert now is not None
        skew = now.timestamp() - (before + time.time()) / 2
    except (SyncdError, OSError, AssertionError, IndexError) as exc:
        return Check(
            "questdb", "fail", f"{where} ({settings.transport}): {exc}", "start QuestDB or fix [questdb] host/ports"
        )
    finally:
        await reader.close()
    skewed = _skew("questdb", skew)
    return Check(
        "questdb", skewed.verdict, f"{where} ({settings.transport}) answers; clock {skewed.detail}", skewed.fix
    )


def _port_check(host: str, port: int) -> Check:
    """The ops endpoint's port: free (daemon not running here), a syncd answering, or taken by something else."""
    label = f"http {host}:{port}"
    with socket.socket() as sock:
        sock.settimeout(1.0)
        if sock.connect_ex((host, port)) != 0:
            return Check(label, "ok", "free: no daemon listening here (syncd run can bind it)")
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=3) as response:
            document = orjson.loads(response.read())
        return Check(label, "ok", f"syncd {document.get('version', '?')} answers ({document.get('instance', '?')})")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return Check(
            label, "fail", "taken by another program", f"free the port or set http.listen (ss -ltnp 'sport = {port}')"
        )


async def _settings(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1) ORDER BY name", list(_SETTINGS))
    return {r["name"]: r["setting"] for r in rows}


def write_bundle(target: Path, config: Config, report: Report, *, logs_from: Sequence[Path] = ()) -> list[str]:
    """Write a gzipped tarball for a support request; returns its member names. Every secret is redacted.

    Holds: the config (passwords as ***), the doctor's checks, /status and /metrics of a daemon
    answering at http.listen, the last 1 MiB of each `logs_from` file, versions, PostgreSQL settings.
    """
    secrets = _secrets(config)
    members: dict[str, bytes] = {
        "config.json": orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        "doctor.json": orjson.dumps([asdict(c) for c in report.checks], option=orjson.OPT_INDENT_2),
        "versions.json": orjson.dumps({**build_info(), **component_versions()}, option=orjson.OPT_INDENT_2),
        "postgresql-settings.json": orjson.dumps(report.settings, option=orjson.OPT_INDENT_2),
    }
    for endpoint in ("status", "metrics"):
        members[f"{endpoint}.txt"] = _fetch(f"http://{config.http.host}:{config.http.port}/{endpoint}")
    for path in logs_from:
        members[f"logs/{path.name}"] = _tail(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            clean = _redact(data, secrets)
            info = tarfile.TarInfo(f"syncd-doctor-{stamp}/{name}")
            info.size, info.mtime, info.mode = len(clean), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(clean))
    return list(members)


def _secrets(config: Config) -> list[str]:
    from urllib.parse import urlsplit

    found = [urlsplit(config.postgres.dsn.get_secret_value()).password or ""]
    if config.questdb is not None:
        found.append(config.questdb.password.get_secret_value())
    return [s for s in found if s]


def _redact(data: bytes, secrets: Sequence[str]) -> bytes:
    text = logs.redact(data.decode("utf-8", errors="replace"))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text.encode()


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body: bytes = response.read()
            return body
    except OSError as exc:
        return f"not fetched: {url}: {exc}\n".encode()


def _tail(path: Path, limit: int = 1 << 20) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read()
    except OSError as exc:
        return f"not read: {path}: {exc}\n".encode()
