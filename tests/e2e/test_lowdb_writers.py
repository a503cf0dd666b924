"""Real npm lowdb writers (v7 JSONFile, v1 FileSync) against `syncd run` as a subprocess.

After each scenario PostgreSQL must equal the final file exactly: same ids, same content (through
the inverse mapping) and row_hash equal to the hash of each file record. Nothing sleeps and hopes:
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncd.database import connect
from syncd.tables import lowdb_record_from_row, record_hash, workspace_items
from tests.e2e.daemon import DaemonProcess, write_config

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
ITEMS = workspace_items("items")

pytestmark = [
    pytest.mark.e2e,
]


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    """lowdb 7.0.1 and lowdb@1 installed under tests/e2e/node (as `make node-deps` does)."""
    if not (NODE_DIR / "node_modules" / "lowdb1").exists():
        subprocess.run(["make", "-s", "-C", str(NODE_DIR), "install"], check=True, timeout=300)


def run_writer(version: str, path: Path, ops: list[dict[str, Any]], *, burst: bool = False) -> None:
    """Run one node writer process to completion."""
    script = NODE_DIR / ("writer-v7.mjs" if version == "v7" else "writer-v1.cjs")
    args = [str(NODE), str(script), str(path), orjson.dumps(ops).decode(), *(["burst"] if burst else [])]
    subprocess.run(args, check=True, timeout=60, cwd=NODE_DIR)


def new_id(kind: int) -> str:
    """The three upstream id formats: numeric string, UUID v4, `item-<epoch ms>-<7 base36>`."""
    if kind == 0:
        return str(random.randrange(1, 10**6))
    if kind == 1:
        return str(uuid.uuid4())
    rand = "".join(random.choices("0123456789abcdefghijklmnopqrstuvwxyz", k=7))
    return f"item-{int(time.time() * 1000)}-{rand}"


async def pg_matches_file(dsn: str, path: Path) -> bool:
    """True when PostgreSQL's items equal the file's items exactly."""
    try:
        items = orjson.loads(path.read_bytes())["items"]
    except (OSError, orjson.JSONDecodeError, KeyError):
        return False
    return await pg_holds(dsn, {r["id"]: r for r in items})


async def pg_holds(dsn: str, want: dict[str, dict[str, Any]]) -> bool:
    """PostgreSQL's items are exactly `want` by id: content (through the inverse) and row_hash."""
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM workspace.workspace_items")
    finally:
        await conn.close()
    got = {r["id"]: r for r in rows}
    if want.keys() != got.keys():
        return False
    return all(
        bytes(got[k]["row_hash"]) == record_hash(v) and lowdb_record_from_row(ITEMS, got[k], v) == v
        for k, v in want.items()
    )


async def converge(daemon: DaemonProcess, dsn: str, path: Path, what: str) -> None:
    """Wait (with a deadline) until PostgreSQL equals the file."""

    async def check() -> bool:
        return await pg_matches_file(dsn, path)

    await daemon.until(check, 30, what)


@pytest.mark.parametrize("version", ["v7", "v1"])
async def test_real_lowdb_writer_scenarios_end_with_pg_equal_to_the_file(
    version: str, dsn: str, tmp_path: Path
) -> None:
    """Creates in bursts, merges of arbitrary keys (and an id change), deletes, three id formats."""
    data = tmp_path / "data"
    data.mkdir()
    path = data / "library.json"
    config = write_config(
        tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leader()  # the file does not exist yet: leading, not ready (nothing to read)
        ids = [new_id(i % 3) for i in range(60)]
        run_writer(version, path, [{"op": "create", "id": k, "title": f"t{k}", "tags": ["a"]} for k in ids])
        await converge(daemon, dsn, path, f"{version}: 60 creates")

        merges = [{"op": "merge", "id": k, "body": {"priority": "high", f"k{i % 4}": [i, {"n": None}]}}
                  for i, k in enumerate(ids[:20])]
        merges.append({"op": "merge", "id": ids[20], "body": {"id": new_id(1)}})  # PUT with a new id
        run_writer(version, path, merges)
        await converge(daemon, dsn, path, f"{version}: merges and an id change")

        run_writer(version, path, [{"op": "delete", "id": k} for k in ids[30:40]])
        await converge(daemon, dsn, path, f"{version}: deletes")

        mixed = [{"op": "create", "id": new_id(2), "title": "burst"} for _ in range(15)]
        mixed += [{"op": "merge", "id": ids[41], "body": {"title": f"v{i}"}} for i in range(10)]
        mixed += [{"op": "delete", "id": ids[42]}]
        run_writer(version, path, mixed, burst=version == "v7")
        await converge(daemon, dsn, path, f"{version}: concurrent burst")
        assert await quarantined(dsn) == 0
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]


async def test_edits_while_the_daemon_is_down_are_applied_on_start(dsn: str, tmp_path: Path) -> None:
    """Stop syncd, let lowdb@7 write, start again: the start-up diff brings PG level."""
    path = tmp_path / "library.json"
    config = write_config(tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "w"\npath = "{path}"\nlayout = "workspace"\n')
    ids = [new_id(i % 3) for i in range(12)]
    run_writer("v7", path, [{"op": "create", "id": k, "title": "x"} for k in ids])
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()
        await converge(daemon, dsn, path, "initial")
    finally:
        assert daemon.stop() == 0
    run_writer("v7", path, [{"op": "delete", "id": ids[0]}, {"op": "merge", "id": ids[1], "body": {"x": 1}},
                            {"op": "create", "id": new_id(1), "title": "new"}])
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()
        await converge(daemon, dsn, path, "offline edits applied on start")
    finally:
        assert daemon.stop() == 0


async def quarantined(dsn: str) -> int:
    """Rows in syncd.quarantine."""
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM syncd.quarantine")
        return n
    finally:
        await conn.close()


def test_node_scripts_exist() -> None:
    """The writers the tests drive are part of the repository."""
    assert all((NODE_DIR / n).exists() for n in ("writer-v7.mjs", "writer-v1.cjs", "ops.cjs"))


