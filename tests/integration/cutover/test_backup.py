"""`syncd backup` and `syncd restore` with the real pg_dump and pg_restore."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson
import pytest

from syncd.config import LowdbSettings
from syncd.cutover import backup
from syncd.cutover.verify import verify_file
from syncd.database import connect
from syncd.errors import BackupError


async def test_round_trip_restores_every_table_and_the_file(
    dsn: str, empty_dsn: str, pool: asyncpg.Pool, mirrored: LowdbSettings, tmp_path: Path
) -> None:
    """The restored database matches the manifest and still equals the LowDB copy."""
    out = tmp_path / "backup"
    manifest = await backup.backup(dsn, out, [mirrored])
    assert manifest.tables["workspace.workspace_items"]["rows"] == 3
    assert manifest.tables["syncd.audit_log"]["rows"] == 5  # three items, two categories
    assert (out / backup.DUMP_FILE).stat().st_size > 0
    copy = out / backup.LOWDB_DIR / "workspace.json"
    assert copy.read_bytes() == mirrored.path.read_bytes()

    await backup.restore(empty_dsn, out)
    conn = await connect(empty_dsn)
    try:
        parity = await verify_file(conn, mirrored.model_copy(update={"path": copy}))
        epoch = await conn.fetchval("SELECT epoch FROM syncd.leader")
    finally:
        await conn.close()
    assert parity.clean
    assert epoch == await pool.fetchval("SELECT epoch FROM syncd.leader")


async def test_restore_refuses_a_database_that_is_not_empty(
    dsn: str, mirrored: LowdbSettings, tmp_path: Path
) -> None:
    """Restoring over live data is refused before pg_restore runs."""
    await backup.backup(dsn, tmp_path / "b", [mirrored])
    with pytest.raises(BackupError, match="target database is not empty: documentation"):
        await backup.restore(dsn, tmp_path / "b")


async def test_restore_reports_a_table_that_differs_from_the_manifest(
    dsn: str, empty_dsn: str, mirrored: LowdbSettings, tmp_path: Path
) -> None:
    """A manifest that does not match what was restored names the table."""
    out = tmp_path / "b"
    await backup.backup(dsn, out, [mirrored])
    raw = orjson.loads((out / backup.MANIFEST_FILE).read_bytes())
    raw["tables"]["workspace.workspace_items"]["rows"] = 4
    (out / backup.MANIFEST_FILE).write_bytes(orjson.dumps(raw))
    with pytest.raises(BackupError, match=r"workspace\.workspace_items: manifest 4 rows"):
        await backup.restore(empty_dsn, out)


async def test_backup_refuses_a_directory_in_use(dsn: str, mirrored: LowdbSettings, tmp_path: Path) -> None:
    """An earlier backup is never overwritten."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("x")
    with pytest.raises(BackupError, match="is not empty"):
        await backup.backup(dsn, tmp_path / "b", [mirrored])
