"""Writing LowDB files: lowdb's exact bytes, record patching, counters, atomic replace."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.cutover.lowdb_file import Untouched, dumps, patch, read_document, untouched, write_atomic
from syncd.errors import UnreadableFile
from syncd.tables import DOCUMENTATION_SYSTEMS, TableSpec, workspace_items

NODE = shutil.which("node")
TRICKY: dict[str, Any] = {
    "items": [
        {"id": "1", "title": 'quote " backslash \\ tab \t newline \n', "tags": [], "meta": {}},
        {"id": "ü-ñ-😀", "title": "</script> \u2028 \u0001", "n": [1, -2, 3.5, 1e-7, 9007199254740991], "x": None},
    ],
    "categories": [],
    "nested": {"a": [[], [{}], {"b": [True, False]}]},
    "nextId": 3,
}


def test_bytes_equal_json_stringify_with_two_spaces() -> None:
    """What lowdb (JSON.stringify(data, null, 2)) would write for the same document, byte for byte."""
    assert NODE is not None, "node is not installed: cannot compare with JSON.stringify (make test needs Node 20)"
    script = (
        "let s='';process.stdin.on('data',d=>s+=d)"
        ".on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s),null,2)))"
    )
    node = subprocess.run([str(NODE), "-e", script], input=orjson.dumps(TRICKY), capture_output=True, check=True)
    assert dumps(TRICKY) == node.stdout


def row_of(spec: TableSpec, record: dict[str, Any]) -> dict[str, Any]:
    """The PostgreSQL row (column → value) the sink stores for `record`."""
    return dict(zip(spec.columns, spec.to_row(record), strict=True))


def item(key: str, **fields: Any) -> dict[str, Any]:
    """A Workspace item in the current upstream shape."""
    return {"id": key, "title": "t", "category": "bug", "createdAt": "2025-11-08T10:00:00.000Z", **fields}


def test_patch_updates_in_place_appends_and_deletes() -> None:
    """Order kept for updates, inserts at the end, deletes removed, other keys untouched."""
    spec = workspace_items("items")
    document: dict[str, Any] = {"items": [item("a"), item("b"), item("c")], "other": 1}
    rows = {"b": row_of(spec, item("b", title="v2")), "d": row_of(spec, item("d"))}
    touched = patch(document, spec, rows, {"a"})
    assert touched == 3
    assert document["items"][:2] == [item("b", title="v2"), item("c")]
    assert document["other"] == 1
    # A record PostgreSQL created gets upstream's key order and shape.
    new = document["items"][2]
    upstream_order = ["id", "title", "description", "category", "priority", "status", "tags", "createdAt", "updatedAt",
                      "createdBy", "updatedBy", "metadata"]
    assert list(new) == upstream_order
    assert (new["priority"], new["tags"], new["updatedAt"], new["metadata"]) == ("medium", [], None, {})


def test_patch_keeps_the_file_records_keys_and_their_order() -> None:
    """A record the file has keeps `"metadata": {}`, `"createdBy": null` and its key order."""
    spec = workspace_items("items")
    kept = {"metadata": {}, "createdBy": None, **item("a"), "updatedBy": None, "zeta": 1, "alpha": 2}
    document: dict[str, Any] = {"items": [kept]}
    patch(document, spec, {"a": row_of(spec, {**kept, "title": "new"})}, set())
    assert list(document["items"][0].items()) == list({**kept, "title": "new"}.items())


def test_counter_moves_past_the_highest_integer_id_only_upwards() -> None:
    """nextSystemId = max(id) + 1, never lowered."""
    document: dict[str, Any] = {"systems": [{"id": 4, "name": "a"}], "nextSystemId": 5}
    patch(document, DOCUMENTATION_SYSTEMS, {"9": row_of(DOCUMENTATION_SYSTEMS, {"id": 9, "name": "b"})}, set())
    assert document["nextSystemId"] == 10
    patch(document, DOCUMENTATION_SYSTEMS, {}, {"9"})
    assert document["nextSystemId"] == 10


def test_write_atomic_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    """A new inode with the old permissions; no temp file left behind."""
    path = tmp_path / "db.json"
    path.write_text("{}")
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_atomic(path, b'{\n  "a": 1\n}')
    assert path.read_bytes() == b'{\n  "a": 1\n}'
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]


POISON = {
    "out of range": (b'"n": 1e400', "number 1e400 is out of range"),
    "invalid UTF-8": (b'"note": "caf\xe9"', "invalid UTF-8"),
    "lone surrogate": (b'"note": "half \\ud83d"', "lone UTF-16 surrogate"),
    "too deep to write": (b'"m": ' + b"[" * 300 + b"]" * 300, "nested deeper than 250 levels"),
}


def poisoned_file(tmp_path: Path, field: bytes) -> tuple[Path, bytes]:
    """A lowdb-layout file whose second item carries `field` after its id."""
    data = dumps({"items": [item("a"), item("b"), item("c")], "categories": [], "nextId": 3})
    data = data.replace(b'"id": "b",', b'"id": "b",\n      ' + field + b",", 1)
    path = tmp_path / "library.json"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("field", POISON.values(), ids=POISON.keys())
def test_a_poison_record_is_read_per_record_and_written_back_as_its_bytes(
    tmp_path: Path, field: tuple[bytes, str]
) -> None:
    """Whatever orjson refuses to read or to write, the file's bytes come back unchanged, the other
    records are parsed, and PostgreSQL's change to another record lands beside it."""
    spec = workspace_items("items")
    path, data = poisoned_file(tmp_path, field[0])
    # The deep record parses whole; only a per-record read (the reverse path's retry) sets it apart.
    version = read_document(path, [spec], whole=field[0][:4] != b'"m":')
    [(found_spec, poison)] = untouched(version.document, [spec])
    assert (found_spec, poison.key, poison.at) == (spec, "b", "items[1]")
    assert field[1] in poison.reason, poison.reason
    assert dumps(version.document) == data
    patch(version.document, spec, {"c": row_of(spec, item("c", title="from PG"))}, set())
    out = dumps(version.document)
    assert poison.data in out
    assert b'"title": "from PG"' in out
    assert out.replace(b'"title": "from PG"', b'"title": "t"') == data


def test_postgresql_row_replaces_a_poison_record_of_its_key(tmp_path: Path) -> None:
    """PostgreSQL is the truth in pg-primary: its row (or delete) for the poison key is written."""
    spec = workspace_items("items")
    path, _ = poisoned_file(tmp_path, POISON["out of range"][0])
    version = read_document(path, [spec])
    patch(version.document, spec, {"b": row_of(spec, item("b", title="from PG"))}, {"a"})
    assert not any(isinstance(r, Untouched) for r in version.document["items"])
    written = orjson.loads(dumps(version.document))
    assert [(r["id"], r["title"]) for r in written["items"]] == [("b", "from PG"), ("c", "t")]
    assert list(written) == ["items", "categories", "nextId"]


def test_a_file_node_cannot_read_either_stays_unreadable(tmp_path: Path) -> None:
    """A syntax error is not poison: the file is unreadable, as it is for Node, and retried."""
    path, _ = poisoned_file(tmp_path, b'"n": tru')
    with pytest.raises(UnreadableFile):
        read_document(path, [workspace_items("items")])
