"""Schema migrations: the packaged syncd/migrations/NNNN_*.sql applied in order, checksummed, under an advisory lock."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import structlog

from syncd.errors import MigrationError

log = structlog.get_logger(__name__)

# Package data (pyproject: tool.setuptools.package-data), so an installed wheel migrates too.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock key: any constant unique to syncd's migrations ('syncdmig' as an int8).
_LOCK_KEY = 0x73796E63646D6967


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file and its checksum."""

    version: str
    path: Path
    checksum: str

    @classmethod
    def read(cls, path: Path) -> Migration:
        """Load a migration file; its version is the file name without `.sql`."""
        return cls(path.stem, path, hashlib.sha256(path.read_bytes()).hexdigest())


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_*.sql` file in `directory`, in version order."""
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise MigrationError(str(directory), "no NNNN_*.sql files found")
    return [Migration.read(p) for p in files]


MigrationState = Literal["applied", "pending", "edited", "unknown"]
_BOOKKEEPING = """CREATE SCHEMA IF NOT EXISTS syncd;
   CREATE TABLE IF NOT EXISTS syncd.schema_migrations (
       version    text        PRIMARY KEY,
       checksum   text        NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now())"""


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where one migration stands in one database (`unknown`: recorded there, absent from this build)."""

    version: str
    state: MigrationState
    applied_at: datetime | None


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    Refuses (before applying anything) when an applied file was edited since.
    """
    migrations = discover() if migrations is None else migrations
    async with _locked(conn):
        await conn.execute(_BOOKKEEPING)
        pending = _pending(migrations, await _recorded(conn))
        for migration in pending:
            await _apply(conn, migration)
        return [m.version for m in pending]


async def dry_run(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations in one transaction and roll it back: they apply, nothing changes.

    Returns the versions `migrate` would apply; a migration that fails raises MigrationError naming it.
    """
    migrations = discover() if migrations is None else migrations
    async with _locked(conn):
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(_BOOKKEEPING)
            pending = _pending(migrations, await _recorded(conn))
            for migration in pending:
                await _execute(conn, migration)
        finally:
            await tx.rollback()
    return [m.version for m in pending]


async def status(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[MigrationStatus]:
    """Every migration's state in this database, read-only (a database never migrated is all pending)."""
    migrations = discover() if migrations is None else migrations
    rows = []
    if await conn.fetchval("SELECT to_regclass('syncd.schema_migrations') IS NOT NULL"):
        rows = await conn.fetch("SELECT version, checksum, applied_at FROM syncd.schema_migrations")
    recorded = {r["version"]: r for r in rows}
    out: list[MigrationStatus] = []
    for m in migrations:
        row = recorded.pop(m.version, None)
        if row is None:
            out.append(MigrationStatus(m.version, "pending", None))
        else:
            state: MigrationState = "applied" if row["checksum"] == m.checksum else "edited"
            out.append(MigrationStatus(m.version, state, row["applied_at"]))
    out += [MigrationStatus(v, "unknown", r["applied_at"]) for v, r in sorted(recorded.items())]
    return out


@contextlib.asynccontextmanager
async def _locked(conn: asyncpg.Connection) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _recorded(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT version, checksum FROM syncd.schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


def _pending(migrations: list[Migration], applied: dict[str, str]) -> list[Migration]:
    _check_unedited(migrations, applied)
    return [m for m in migrations if m.version not in applied]


def _check_unedited(migrations: list[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                migration.path.name,
                f"was edited after it was applied (checksum {recorded[:12]} in the database, "
                f"{migration.checksum[:12]} on disk); add a new migration instead",
            )


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        await _execute(conn, migration)
    log.info("migration applied", version=migration.version)


async def _execute(conn: asyncpg.Connection, migration: Migration) -> None:
    """Run one migration's SQL and record it, inside the caller's transaction."""
    try:
        await conn.execute(migration.path.read_text(encoding="utf-8"))
        await conn.execute(
            "INSERT INTO syncd.schema_migrations (version, checksum) VALUES ($1, $2)",
            migration.version,
            migration.checksum,
        )
    except asyncpg.PostgresError as exc:
        raise MigrationError(migration.path.name, f"[{exc.sqlstate}] {exc}") from exc
