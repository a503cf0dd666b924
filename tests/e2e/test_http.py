"""The real daemon's endpoint: the version in /status and /metrics, and GET /explain/<table>/<key>."""

from __future__ import annotations

import hashlib
from pathlib import Path

from syncd.version import VERSION
from tests.e2e.daemon import DaemonProcess, write_config
from tests.lowdb_files import item, write_v7


async def test_version_and_explain_endpoint(dsn: str, tmp_path: Path) -> None:
    path, notes = tmp_path / "library.json", tmp_path / "notes.json"
    write_v7(path, {"items": [item("a1")], "categories": []})
    write_v7(notes, {"notes": [{"id": "n/1", "text": "an id with a slash"}]})
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    body += f'\n[[lowdb]]\nname = "notes"\npath = "{notes}"\nlayout = "generic"\ncollections = [{{name = "notes"}}]\n'
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

        # A generic file's rows: syncd.documents, keyed COLLECTION/ID (the id may hold a slash).
        for url in ("/explain/documents/notes/n/1", "/explain/syncd.documents/notes/n%2F1"):
            status, document = await daemon.get(url)
            assert status == 200, document
            assert (document["stream"], document["present"], document["change_captured"]) == ("notes", True, False)
            assert document["source_position"]["sha"] == hashlib.sha256(notes.read_bytes()).hexdigest()
            assert document["source_position_wrote_row"] is True
        status, unknown = await daemon.get("/explain/documents/nope/1")
        assert status == 404
        assert "not COLLECTION/ID of a configured collection (collections: notes)" in unknown["error"]

        status, unknown = await daemon.get("/explain/nope/1")
        assert status == 404
        assert "'nope' is not written by syncd" in unknown["error"]
    finally:
        assert daemon.stop() == 0, daemon.output()
