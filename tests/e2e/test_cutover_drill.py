"""The whole cutover path, end to end: real lowdb@7 app writes, the daemon, the `syncd` commands.

mirror (app writes the file) → verify → promote → the Node side writes PostgreSQL (plain SQL, and
a Prisma 7 client in interactive transactions) → those writes appear in the file → rollback → app
writes the file again → PG follows → backup → restore. At the end PostgreSQL, the file and the
restored backup are all equal, and every write of every step is there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.config import LowdbSettings
from syncd.cutover.verify import verify_file
from syncd.database import connect
from tests.e2e.daemon import SYNCD, DaemonProcess, write_config
from tests.e2e.prisma import generate, prisma_env, prisma_project, write_through_prisma
from tests.e2e.test_lowdb_writers import node_modules, run_writer

__all__ = ["node_modules"]  # the module fixture installing the npm writers (Prisma's too)

pytestmark = [
    pytest.mark.e2e,
]

INSERT = """INSERT INTO workspace.workspace_items (id, title, description, category, priority, status, tags, created_at)
            VALUES ($1, $2, 'from the api', 'dashboard', 'high', 'new', '{pg}', now())"""


async def syncd(*args: str, dsn: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Run a `syncd` command against `dsn`."""
    env = {**os.environ, "SYNCD_PG_DSN": dsn}
    argv = [str(SYNCD), *args, "--config", str(config)]
    return await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120)


async def equal(dsn: str, settings: LowdbSettings) -> bool:
    """PostgreSQL and the file hold the same records (column-space parity)."""
    conn = await connect(dsn)
    try:
        return (await verify_file(conn, settings)).clean
    except (OSError, ValueError):
        return False
    finally:
        await conn.close()


def file_items(path: Path) -> dict[str, dict[str, Any]]:
    """The file's items by id."""
    return {r["id"]: r for r in orjson.loads(path.read_bytes())["items"]}


async def test_mirror_promote_pg_writes_rollback_app_writes_backup_restore(
    dsn: str, empty_dsn: str, tmp_path: Path
) -> None:
    """Nothing written at any step is missing, and PG = file = restored backup at the end."""
    path = tmp_path / "library.json"
    settings = LowdbSettings(name="workspace", path=path, layout="workspace")
    config = write_config(
        tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    seed = [{"op": "category", "name": "dashboard"}]  # PG writers may only use an existing category
    run_writer("v7", path, [*seed, *({"op": "create", "id": f"a{i}", "title": f"app {i}"} for i in range(5))])
    env = prisma_env(tmp_path, dsn)
    client = generate(prisma_project(tmp_path), env)
    daemon = DaemonProcess(config, dsn).start()

    async def mode_is(mode: str) -> bool:
        return (await daemon.get("/status"))[1].get("cutover", {}).get("workspace") == mode

    async def in_sync() -> bool:
        return await equal(dsn, settings)

    try:
        await daemon.leading()
        # 1. mirror: the app keeps writing the file
        run_writer("v7", path, [{"op": "merge", "id": "a0", "body": {"status": "review"}},
                                {"op": "delete", "id": "a1"}, {"op": "create", "id": "a5", "title": "app 5"}])
        await daemon.until(in_sync, 30, "mirror: PG equals the file")
        assert (await syncd("verify", dsn=dsn, config=config)).returncode == 0

        # 2. promote; the Node services now write PostgreSQL
        promote = await syncd("cutover", "promote", "workspace", dsn=dsn, config=config)
        assert promote.returncode == 0, promote.stderr
        await daemon.until(lambda: mode_is("pg-primary"), 10, "daemon in pg-primary")
        conn = await connect(dsn)
        try:
            await conn.execute(INSERT, "p1", "pg 1")
            await conn.execute("UPDATE workspace.workspace_items SET priority = 'low' WHERE id = 'a2'")
            await conn.execute("DELETE FROM workspace.workspace_items WHERE id = 'a3'")
        finally:
            await conn.close()
        # The Idea Bank through Prisma: create + update in one transaction, then a named rename.
        await asyncio.to_thread(write_through_prisma, client, env, ["workspaceItem"], "prisma1", "a4")
        await daemon.until(in_sync, 30, "pg-primary: the file follows PostgreSQL")
        items = file_items(path)
        assert items["p1"]["tags"] == ["pg"]
        assert items["prisma1"]["title"] == "Renamed by idea-bank"
        assert items["a4"]["status"] == "review"

        # 3. rollback; the app writes the file again and PostgreSQL follows
        rollback = await syncd("cutover", "rollback", "workspace", dsn=dsn, config=config)
        assert rollback.returncode == 0, rollback.stderr
        await daemon.until(lambda: mode_is("mirror"), 10, "daemon back in mirror")
        run_writer("v7", path, [{"op": "create", "id": "a6", "title": "app 6"},
                                {"op": "merge", "id": "p1", "body": {"title": "edited by the app"}}])
        await daemon.until(in_sync, 30, "mirror again: PG follows the file")
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]

    items = file_items(path)
    assert sorted(items) == ["a0", "a2", "a4", "a5", "a6", "p1", "prisma1"]
    assert items["a0"]["status"] == "review"
    assert items["a2"]["priority"] == "low"
    assert items["p1"]["title"] == "edited by the app"

    # 4. backup, restore into an empty database, and the restored copy equals the file
    backup = await syncd("backup", "--out", str(tmp_path / "backup"), dsn=dsn, config=config)
    assert backup.returncode == 0, backup.stderr
    restore = await syncd("restore", str(tmp_path / "backup"), dsn=empty_dsn, config=config)
    assert restore.returncode == 0, restore.stderr
    assert await equal(empty_dsn, settings)
    assert (await syncd("verify", dsn=empty_dsn, config=config)).returncode == 0


async def test_periodic_verify_reports_a_planted_mismatch_in_metrics(dsn: str, tmp_path: Path) -> None:
    """The leader's periodic verify publishes syncd_verify_mismatch_rows for a row changed behind its back."""
    path = tmp_path / "library.json"
    config = write_config(
        tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    run_writer("v7", path, [{"op": "create", "id": f"a{i}", "title": f"app {i}"} for i in range(3)])
    daemon = DaemonProcess(config, dsn, env={"SYNCD_DAEMON_VERIFY_INTERVAL": "200ms"}).start()
    gauge = 'syncd_verify_mismatch_rows{table="workspace.workspace_items"}'

    async def reports(value: str) -> bool:
        return f"{gauge} {value}" in (await daemon.get("/metrics"))[1]

    try:
        await daemon.leading()
        await daemon.until(lambda: reports("0.0"), 15, "a clean verify")
        conn = await connect(dsn)
        try:
            await conn.execute("UPDATE workspace.workspace_items SET title = 'behind its back' WHERE id = 'a1'")
        finally:
            await conn.close()
        await daemon.until(lambda: reports("1.0"), 15, "the mismatch in /metrics")
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]
