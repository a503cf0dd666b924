"""A poison record in a `pg-primary` file, under the real daemon: held, kept, and the rest flows.

After a promote another writer puts two records orjson refuses into the file lowdb@7 wrote: a new
record holding `1e400` (Node reads Infinity) and an existing record rewritten with a lone surrogate
escape. The reverse path quarantines the new one under its key and writes its bytes back untouched,
holds the existing one as a foreign write and restores PostgreSQL's row for it (PostgreSQL is the
truth in `pg-primary`), and a PostgreSQL update to a third record still reaches the file, pass
after pass, without the poison being quarantined twice.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.database import connect
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.test_cutover_drill import syncd
from tests.e2e.test_lowdb_writers import node_modules, run_writer

__all__ = ["node_modules"]  # the module fixture installing the npm writers

pytestmark = [
    pytest.mark.e2e,
]

NEW_POISON = b'\n    {\n      "id": "poison",\n      "title": "out of range",\n      "size": 1e400\n    }'
"""A record Node reads (`size` is Infinity) and orjson refuses, as another writer put it."""
SURROGATE = b'"title": "half \\ud83d"'


def inject(path: Path) -> bytes:
    """Append NEW_POISON to the items and give `a1` a lone surrogate, replacing the file atomically."""
    data = path.read_bytes()
    at = data.index(b"\n  ]", data.index(b'"items": ['))
    data = data[:at] + b"," + NEW_POISON + data[at:]
    record = data.index(b'"id": "a1"')
    title = re.compile(rb'"title": "[^"]*"').search(data, record)
    assert title is not None
    data = data[: title.start()] + SURROGATE + data[title.end() :]
    tmp = path.with_name(".library.json.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def items(path: Path) -> dict[str, dict[str, Any]]:
    """The file's items by id, read as Node reads them (Python's json takes 1e400 and the surrogate)."""
    return {r["id"]: r for r in json.loads(path.read_bytes())["items"]}


async def quarantined(config: Path, dsn: str) -> list[dict[str, Any]]:
    """`syncd quarantine list --json` of the stream."""
    done = await syncd("quarantine", "list", "--stream", "workspace", "--json", dsn=dsn, config=config)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


async def test_poison_in_a_pg_primary_file_is_held_kept_and_pg_changes_still_reach_the_file(
    dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "library.json"
    config = write_config(
        tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    seed = [{"op": "category", "name": "dashboard"}]
    run_writer("v7", path, [*seed, *({"op": "create", "id": f"a{i}", "title": f"app {i}"} for i in range(3))])
    daemon = DaemonProcess(config, dsn).start()

    async def mode_is(mode: str) -> bool:
        return (await daemon.get("/status"))[1].get("cutover", {}).get("workspace") == mode

    async def pg_update(priority: str) -> None:
        conn = await connect(dsn)
        try:
            await conn.execute("UPDATE workspace.workspace_items SET priority = $1 WHERE id = 'a2'", priority)
        finally:
            await conn.close()

    try:
        await daemon.leading()
        await daemon.until(lambda: _count(dsn, 3), 30, "the file mirrored into PostgreSQL")
        promote = await syncd("cutover", "promote", "workspace", dsn=dsn, config=config)
        assert promote.returncode == 0, promote.stderr
        await daemon.until(lambda: mode_is("pg-primary"), 10, "daemon in pg-primary")
        a1 = items(path)["a1"]

        inject(path)
        await pg_update("low")

        async def reached(priority: str) -> bool:
            return items(path)["a2"]["priority"] == priority

        await daemon.until(lambda: reached("low"), 30, "PostgreSQL's update beside the poison in the file")
        assert NEW_POISON in path.read_bytes(), "the poison record's bytes are written back untouched"
        # PostgreSQL's row replaces the poisoned a1; written without a readable record to keep the shape of,
        # it has the keys a record PostgreSQL creates has.
        restored = items(path)["a1"]
        assert {k: restored.get(k) for k in a1} == a1, "PostgreSQL's row restored over the poisoned a1"
        # Another pass: the update flows again and nothing is quarantined twice.
        await pg_update("critical")
        await daemon.until(lambda: reached("critical"), 30, "a second update beside the poison")
        assert NEW_POISON in path.read_bytes()

        held = {e["key"]: e for e in await quarantined(config, dsn)}
        assert sorted(held) == ["a1", "poison"], held
        assert "items[3]: number 1e400 is out of range" in held["poison"]["reason"]
        assert "1e400" in held["poison"]["raw"]["text"]
        assert "another writer" in held["a1"]["reason"]
        assert "half \\ud83d" in held["a1"]["raw"]["text"], held["a1"]["raw"]  # the foreign version, as written
        lines = [e for e in daemon.events() if e.get("event", "").startswith("poison record in a pg-primary")]
        assert [(e["key"], e["at"], e["path"]) for e in lines] == [("poison", "items[3]", str(path))]
        metrics = (await daemon.get("/metrics"))[1]
        assert re.search(r'^syncd_quarantine_records\{stream="workspace"\} 2\.0$', metrics, re.MULTILINE), metrics
        status, body = await daemon.get("/status")
        assert status == 200
        assert body["streams"]["workspace"]["last_error"] is None, body
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]


async def _count(dsn: str, rows: int) -> bool:
    conn = await connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM workspace.workspace_items") == rows)
    finally:
        await conn.close()
