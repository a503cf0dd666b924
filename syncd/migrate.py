"""Schema migrations: the packaged syncd/migrations/NNNN_*.sql applied in order, checksummed, under an advisory lock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    Refuses (before applying anything) when an applied file was edited since.
    """
    migrations = discover() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE SCHEMA IF NOT EXISTS syncd;
               CREATE TABLE IF NOT EXISTS syncd.schema_migrations (
                   version    text        PRIMARY KEY,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM syncd.schema_migrations")
        applied: dict[str, str] = {r["version"]: r["checksum"] for r in rows}
        _check_unedited(migrations, applied)
        pending = [m for m in migrations if m.version not in applied]
        for migration in pending:
            await _apply(conn, migration)
        return [m.version for m in pending]
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


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
    sql = migration.path.read_text(encoding="utf-8")
    try:
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO syncd.schema_migrations (version, checksum) VALUES ($1, $2)",
                migration.version,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(migration.path.name, f"[{exc.sqlstate}] {exc}") from exc
    log.info("migration applied", version=migration.version)
