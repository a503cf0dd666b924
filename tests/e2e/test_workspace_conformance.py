"""The Workspace API switched with its own LIBRARY_DB_STRATEGY, as the README's runbook does it.

The Express service of tests/e2e/node/workspace-service (its routes, a LowDB and a node-postgres
storage client with upstream's statements, upstream-workspace-api.md §1 to §3) runs on LowDB while
syncd mirrors, on PostgreSQL after `promote`, and on LowDB again (restarted) after `rollback`. The
PostgreSQL strategy connects as a login role in syncd_service. At every step GET responses agree
across the two strategies (the snake_case columns the PostgreSQL strategy adds aside), PostgreSQL
equals the file, and every write made so far is there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from syncd.config import LowdbSettings
from syncd.cutover.verify import verify_file
from syncd.database import connect
from tests.e2e.daemon import SYNCD, DaemonProcess, write_config
from tests.e2e.test_lowdb_writers import node_modules
from tests.e2e.workspace_service import Service

__all__ = ["node_modules"]  # the module fixture installing the npm packages

pytestmark = [
    pytest.mark.e2e,
]

ITEM_KEYS = ("id", "title", "description", "category", "priority", "status", "tags", "createdAt", "updatedAt",
             "createdBy", "updatedBy", "metadata")


def api_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as both strategies answer it (the PostgreSQL one adds the snake_case columns)."""
    return {k: item.get(k) for k in ITEM_KEYS}


def api_category(category: dict[str, Any]) -> dict[str, Any]:
    """A category in the fields both strategies answer (LowDB's `active` is PostgreSQL's `is_active`)."""
    return {"id": category["id"], "name": category["name"], "description": category.get("description"),
            "display_order": category.get("display_order"),
            "active": category["active"] if "active" in category else category["is_active"]}


class Api:
    """HTTP calls to one running service."""

    def __init__(self, service: Service) -> None:
        self.url = service.url

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """One request; status and JSON body."""
        async with aiohttp.ClientSession() as session, session.request(method, self.url + path, json=body) as r:
            return r.status, await r.json()

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """One request that must answer `status`; its `data`."""
        got, answer = await self.call(method, path, body)
        assert got == status, f"{method} {path}: {got} {answer}"
        return answer.get("data")

    async def view(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Everything GET shows: items by id (each also read alone) and the active categories."""
        items = {i["id"]: api_item(i) for i in await self.ok("GET", "/api/items")}
        for key, item in items.items():
            assert api_item(await self.ok("GET", f"/api/items/{key}")) == item
        categories = sorted((api_category(c) for c in await self.ok("GET", "/api/categories")), key=lambda c: c["id"])
        return items, categories


@pytest.fixture
async def service_dsn(dsn: str) -> AsyncIterator[str]:
    """A login role in syncd_service (roles are cluster-wide: named after the test's database)."""
    name = dsn.rsplit("/", 1)[1].split("?")[0]
    role = f"{name}_api"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'conformance' IN ROLE syncd_service")
        head, _, tail = dsn.partition("://")
        host = tail.split("@", 1)[1] if "@" in tail else tail
        yield f"{head}://{role}:conformance@{host}"
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def start(tmp_path: Path, name: str, strategy: str, path: Path, dsn: str) -> Service:
    """The service on one strategy, as its LIBRARY_DB_STRATEGY picks it."""
    env = {"LIBRARY_DB_STRATEGY": strategy, "DB_PATH": str(path), "DATABASE_URL": dsn}
    return await Service(tmp_path, env, name).start()


async def syncd_cli(dsn: str, config: Path, *args: str) -> None:
    """A `syncd` command that must succeed."""
    env = {**os.environ, "SYNCD_PG_DSN": dsn}
    done = await asyncio.to_thread(
        subprocess.run, [str(SYNCD), *args, "--config", str(config)], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def agree(lowdb: Api, pg: Api, settings: LowdbSettings, dsn: str, expected: dict[str, str]) -> None:
    """Both strategies answer the same; PostgreSQL equals the file; every written title is there."""
    items, categories = await lowdb.view()
    pg_items, pg_categories = await pg.view()
    assert categories == pg_categories
    for key in items.keys() | pg_items.keys():
        assert items.get(key) == pg_items.get(key), key
    assert {k: i["title"] for k, i in items.items()} == expected
    conn = await connect(dsn)
    try:
        assert (await verify_file(conn, settings)).clean
    finally:
        await conn.close()


async def writes(api: Api, expected: dict[str, str], step: str) -> None:
    """Creates, updates and a delete through the API; `expected` follows (id → title)."""
    made = [await api.ok("POST", "/api/items", {"title": f"{step} {i}", "description": "d", "category": "feature",
                                                 "priority": "high"}, 201) for i in range(3)]
    expected.update({m["id"]: m["title"] for m in made})
    await api.ok("PUT", f"/api/items/{made[0]['id']}", {"title": f"{step} edited", "status": "review"})
    expected[made[0]["id"]] = f"{step} edited"
    await api.ok("DELETE", f"/api/items/{made[1]['id']}")
    del expected[made[1]["id"]]


async def settled(daemon: DaemonProcess, settings: LowdbSettings, dsn: str) -> None:
    """The daemon has carried the last write across (either direction)."""

    async def clean() -> bool:
        conn = await connect(dsn)
        try:
            return (await verify_file(conn, settings)).clean
        finally:
            await conn.close()

    await daemon.until(clean, 30, "PostgreSQL equals the file")


async def test_lowdb_then_postgresql_after_promote_then_lowdb_after_rollback(
    dsn: str, service_dsn: str, tmp_path: Path
) -> None:
    """The runbook's steps with the real service's switch, under item and category writes."""
    path = tmp_path / "library.json"
    settings = LowdbSettings(name="workspace", path=path, layout="workspace")
    entry = f'[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    config = write_config(tmp_path / "syncd.toml", entry)
    expected: dict[str, str] = {}
    on_lowdb = await start(tmp_path, "lowdb", "lowdb", path, service_dsn)  # seeds the default categories
    daemon = DaemonProcess(config, dsn).start()
    services = [on_lowdb]
    try:
        await daemon.leading()
        # 1. LowDB is the truth; syncd mirrors. Category writes need the PostgreSQL strategy.
        lowdb = Api(on_lowdb)
        await writes(lowdb, expected, "lowdb")
        status, _ = await lowdb.call("POST", "/api/categories", {"name": "ux"})
        assert status == 500
        await settled(daemon, settings, dsn)
        on_pg = await start(tmp_path, "pg-reader", "postgresql", path, service_dsn)
        services.append(on_pg)
        await agree(lowdb, Api(on_pg), settings, dsn, expected)

        # 2. Stop every LowDB-strategy process, promote, switch the service to PostgreSQL.
        assert on_lowdb.stop() == 0
        await syncd_cli(dsn, config, "cutover", "promote", "workspace")
        pg = Api(on_pg)
        await writes(pg, expected, "pg")
        await pg.ok("POST", "/api/categories", {"name": "ux", "display_name": "User experience"}, 201)
        await pg.ok("POST", "/api/categories", {"name": "ux"}, 409)
        await pg.ok("PUT", "/api/categories/ux", {"description": "screens", "sort_order": 7})
        await pg.ok("POST", "/api/categories", {"name": "temp"}, 201)
        await pg.ok("PATCH", "/api/categories/temp/toggle")
        await pg.ok("DELETE", "/api/categories/feature", status=409)  # still used by items
        await pg.ok("DELETE", "/api/categories/other")
        made = await pg.ok("POST", "/api/items", {"title": "in ux", "description": "d", "category": "ux"}, 201)
        expected[made["id"]] = "in ux"
        await settled(daemon, settings, dsn)
        lowdb_reader = await start(tmp_path, "lowdb-reader", "lowdb", path, service_dsn)  # reads the file anew
        services.append(lowdb_reader)
        await agree(Api(lowdb_reader), pg, settings, dsn, expected)
        assert "ux" in {c["id"] for c in (await pg.view())[1]}

        # 3. Stop the PostgreSQL writers, roll back, restart the service on LowDB.
        assert lowdb_reader.stop() == 0
        assert on_pg.stop() == 0
        await syncd_cli(dsn, config, "cutover", "rollback", "workspace")
        back = await start(tmp_path, "lowdb-again", "lowdb", path, service_dsn)
        services.append(back)
        await writes(Api(back), expected, "again")
        await settled(daemon, settings, dsn)
        pg_reader = await start(tmp_path, "pg-reader-again", "postgresql", path, service_dsn)
        services.append(pg_reader)
        await agree(Api(back), Api(pg_reader), settings, dsn, expected)
    finally:
        for service in services:
            service.stop()
        assert daemon.stop() == 0, daemon.output()[-3000:]
