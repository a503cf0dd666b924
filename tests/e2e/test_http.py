"""The real daemon's endpoint: the version in /status and /metrics, and GET /explain/<table>/<key>."""

from __future__ import annotations

import hashlib
from pathlib import Path

from syncd.version import VERSION
from tests.e2e.daemon import DaemonProcess, write_config
from tests.lowdb_files import item, write_v7


async def test_version_and_explain_endpoint(dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item("a1")], "categories": []})
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    daemon = DaemonProcess(write_config(tmp_path / "syncd.toml", body), dsn).start()
    try:
        await daemon.leading()
        status, document = await daemon.get("/status")
        assert status == 200
        assert document["version"] == VERSION
        metrics = (await daemon.get("/metrics"))[1]
        build = next(line for line in metrics.splitlines() if line.startswith("syncd_build_info{"))
        assert f'version="{VERSION}"' in build

        status, found = await daemon.get("/explain/workspace_items/a1")
        assert status == 200, found
        assert found["stream"] == "workspace"
        assert found["present"] is True
        assert found["source_position"]["sha"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert found["source_position_wrote_row"] is True
        assert [e["op"] for e in found["outbox_events"]] == ["insert"]

        status, unknown = await daemon.get("/explain/nope/1")
        assert status == 404
        assert "'nope' is not written by syncd" in unknown["error"]
    finally:
        assert daemon.stop() == 0, daemon.output()
