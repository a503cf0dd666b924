"""`syncd explain TABLE KEY` on rows a real LowDB stream wrote: the file version sha of the batch that
wrote the row (or that it was an earlier one), its transaction, outbox events and quarantine history."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import orjson

from syncd.config import LowdbSettings
from syncd.lowdb.source import LowdbSource
from syncd.sink.postgres import PostgresSink
from tests.integration.cli.conftest import syncd, write_config
from tests.integration.conftest import eventually, running
from tests.lowdb_files import item, write_v7


async def explain(config: Path, *args: str) -> dict[str, object]:
    ran = await asyncio.to_thread(syncd, "explain", *args, "--json", "--config", config)
    assert ran.rc == 0, ran.stderr
    document: dict[str, object] = orjson.loads(ran.stdout)
    return document


async def test_explain_names_the_file_version_that_wrote_the_row(
    dsn: str, pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item("a1"), item("a2")], "categories": []})
    first_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = LowdbSettings(name="workspace", path=path, layout="workspace")
    config = write_config(
        tmp_path / "syncd.toml", dsn, f'[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    )
    async with running(LowdbSource(entry, pool=pool), sink):
        await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM workspace.workspace_items"), what="first load")
        first = await explain(config, "workspace_items", "a1")
        write_v7(path, {"items": [item("a1"), item("a2", title="changed")], "categories": []})
        await eventually(
            lambda: pool.fetchval("SELECT title = 'changed' FROM workspace.workspace_items WHERE id = 'a2'"),
            what="second version",
        )
        await eventually(
            lambda: pool.fetchval(
                "SELECT position->>'sha' <> $1 FROM syncd.checkpoints WHERE stream = 'workspace'", first_sha
            ),
            what="checkpoint moved",
        )
        changed = await explain(config, "workspace.workspace_items", "a2")
        untouched = await explain(config, "workspace_items", "a1")

    assert first["present"] is True
    assert first["stream"] == "workspace"
    assert first["source_position"]["sha"] == first_sha  # type: ignore[index]
    assert first["source_position_wrote_row"] is True
    assert first["last_change"]["op"] == "insert"  # type: ignore[index]
    assert first["row_txid"] == first["last_change"]["txid"]  # type: ignore[index]
    assert [e["op"] for e in first["outbox_events"]] == ["insert"]  # type: ignore[union-attr]

    second_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert changed["source_position"]["sha"] == second_sha  # type: ignore[index]
    assert changed["source_position_wrote_row"] is True
    assert [e["op"] for e in changed["outbox_events"]] == ["insert", "update"]  # type: ignore[union-attr]
    assert untouched["source_position_wrote_row"] is False  # a1 was written by the first version
    assert untouched["row_txid"] == first["row_txid"]


async def test_explain_shows_quarantine_history_and_missing_rows(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason, status)
               VALUES ('lowdb', 'workspace', 'workspace.workspace_items', 'bad-1', '{}', $1, 'replayed')""",
            "priority is not one of …",
        )
    finally:
        await conn.close()
    config = write_config(
        tmp_path / "syncd.toml", dsn, '[[lowdb]]\nname = "workspace"\npath = "w.json"\nlayout = "workspace"\n'
    )
    found = await explain(config, "workspace_items", "bad-1")
    assert found["present"] is False
    assert [(q["status"], q["reason"]) for q in found["quarantine"]] == [("replayed", "priority is not one of …")]  # type: ignore[union-attr]
    table = await asyncio.to_thread(syncd, "explain", "workspace_items", "bad-1", "--config", config)
    assert table.rc == 0, table.stderr
    assert "not in PostgreSQL" in table.stdout
    assert "replayed" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    unknown = await asyncio.to_thread(syncd, "explain", "nope", "1", "--config", config)
    assert unknown.rc == 2
    assert unknown.error_line.startswith("syncd explain: table 'nope' is not written by syncd (tables: ")


async def test_explain_a_generic_document_by_collection_and_id(
    dsn: str, pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """syncd.documents rows are keyed COLLECTION/ID: the collection names the stream and file; a
    quarantined record shows under its collection; a key of no configured collection exits 2."""
    path = tmp_path / "notes.json"
    write_v7(path, {"notes": [{"id": "n1", "text": "one"}, {"text": "no id"}]})
    entry = LowdbSettings.model_validate(
        {"name": "notes", "path": path, "layout": "generic", "collections": [{"name": "notes"}]}
    )
    config = write_config(
        tmp_path / "syncd.toml",
        dsn,
        f'[[lowdb]]\nname = "notes"\npath = "{path}"\nlayout = "generic"\ncollections = [{{name = "notes"}}]\n',
    )
    async with running(LowdbSource(entry, pool=pool), sink):
        await eventually(lambda: pool.fetchval("SELECT count(*) = 1 FROM syncd.documents"), what="first load")
    await pool.execute(
        """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason)
           VALUES ('lowdb', 'notes', 'syncd.documents:notes', 'n2', '{}', 'held for the test')"""
    )
    found = await explain(config, "documents", "notes/n1")
    assert (found["table"], found["stream"], found["present"], found["change_captured"]) == (
        "syncd.documents", "notes", True, False)  # fmt: skip
    assert found["source_position"]["sha"] == hashlib.sha256(path.read_bytes()).hexdigest()  # type: ignore[index]
    assert found["source_position_wrote_row"] is True
    assert (found["last_change"], found["outbox_events"]) == (None, [])
    held = await explain(config, "syncd.documents", "notes/n2")
    assert held["present"] is False
    assert [q["reason"] for q in held["quarantine"]] == ["held for the test"]  # type: ignore[union-attr]

    table = await asyncio.to_thread(syncd, "explain", "syncd.documents", "notes/n1", "--config", config)
    assert table.rc == 0, table.stderr
    words = " ".join(table.stdout.split())  # free text folds at 80 columns
    assert "notes.json" in words
    assert "not change-captured (layout generic)" in words
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    for bad in ("n1", "other/n1", "notes/"):
        ran = await asyncio.to_thread(syncd, "explain", "documents", bad, "--config", config)
        assert ran.rc == 2, ran.stdout
        assert ran.error_line == (
            f"syncd explain: key {bad!r} of syncd.documents is not COLLECTION/ID of a configured collection"
            " (collections: notes)"
        )
