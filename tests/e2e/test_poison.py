"""Poison records written by the real lowdb@7 writer, under the real daemon process.

Node's JSON.stringify writes a NUL, nesting 300 deep and a lone surrogate without complaint; each
is quarantined under its key while another record's edit in the same file flows, the daemon stays
up, and once the writer fixes the records and `syncd quarantine replay` runs, PostgreSQL equals the
file again, no restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd import quarantine as q
from syncd.database import connect
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.test_lowdb_writers import NODE, NODE_DIR, pg_holds, pg_matches_file

SYNCD = Path(sys.executable).with_name("syncd")

pytestmark = [
    pytest.mark.e2e,
]


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


POISON = {
    "p-nul": ({"title": "a\u0000b"}, "title holds a NUL character"),
    "p-deep": ({"metadata": nested(300)}, "nested deeper than 250 levels"),
    "p-surrogate": ({"title": "half \ud83d"}, "lone UTF-16 surrogate"),
}


def write(path: Path, ops: list[dict[str, Any]]) -> None:
    """lowdb@7's writer, one write per op (Python's json passes the lone surrogate as an escape)."""
    args = [str(NODE), str(NODE_DIR / "writer-v7.mjs"), str(path), json.dumps(ops)]
    subprocess.run(args, check=True, timeout=60, cwd=NODE_DIR)


async def held(dsn: str) -> list[q.Entry]:
    """Held quarantine rows."""
    conn = await connect(dsn)
    try:
        return await q.list_entries(conn)
    finally:
        await conn.close()


def items(path: Path) -> dict[str, dict[str, Any]]:
    """The file's items by id (Python's json reads the lone surrogate as Node does)."""
    return {r["id"]: r for r in json.loads(path.read_bytes())["items"]}


async def test_node_written_poison_is_held_while_the_file_flows_and_the_fix_flows(dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    config = write_config(tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "w"\npath = "{path}"\nlayout = "workspace"\n')
    write(path, [{"op": "create", "id": k, "title": k} for k in ("a", "b", *POISON)])
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()
        good = items(path)
        await daemon.until(lambda: pg_holds(dsn, good), 30, "initial file in PostgreSQL")

        write(path, [{"op": "merge", "id": k, "body": body} for k, (body, _) in POISON.items()])

        async def all_held() -> bool:
            return len(await held(dsn)) == len(POISON)

        await daemon.until(all_held, 30, "every poison record quarantined")
        for entry in await held(dsn):
            assert POISON[entry.key or ""][1] in entry.reason, entry.reason
        # Another record's edit in the same file flows; the poisoned keys keep their last good rows.
        write(path, [{"op": "merge", "id": "a", "body": {"title": "edited beside the poison"}}])
        good["a"] = items(path)["a"]
        await daemon.until(lambda: pg_holds(dsn, good), 30, "an edit beside the poison")
        status, body = await daemon.get("/status")
        assert status == 200
        assert body["streams"]["w"]["quarantined"] == len(POISON)

        write(path, [{"op": "merge", "id": k, "body": {"title": "fixed", "metadata": {"fixed": True}}} for k in POISON])
        ids = [str(e.id) for e in await held(dsn)]
        replay = subprocess.run([str(SYNCD), "quarantine", "replay", *ids, "--config", str(config)],
                                env=daemon.env, capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr

        async def level() -> bool:
            return await pg_matches_file(dsn, path)

        await daemon.until(level, 30, "the fixed records applied, no restart")
        assert await held(dsn) == []
        assert orjson.loads(path.read_bytes())["items"]  # the file stayed the writer's
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
