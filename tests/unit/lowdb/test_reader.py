"""The incremental reader: every version it reads equals a whole parse (`read_file`), by construction.

Files are written as lowdb does (`JSON.stringify(data, null, 2)`, which orjson's 2-space indent
reproduces byte for byte for these records), and also minified, re-indented or hand-broken, where
the reader must fall back without changing the result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import UnreadableFile
from syncd.lowdb import reader as lowdb_reader
from syncd.lowdb import records as lowdb_records
from syncd.lowdb.diff import FileVersion, read_file
from syncd.lowdb.reader import VersionReader
from syncd.tables import specs_for_layout
from tests.lowdb_files import Mutations

SPECS = specs_for_layout("workspace")
COLLECTIONS = [s.collection for s in SPECS]

ids = st.one_of(
    st.integers(0, 30).map(str),
    st.uuids().map(str),
    st.integers(0, 30).map(lambda n: f"item-1762600000000-{n:04d}"),
)
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
record = st.fixed_dictionaries(
    {"id": ids, "title": texts},
    optional={
        "tags": st.lists(texts, max_size=3),
        "nested": st.dictionaries(texts, st.integers(-(2**53), 2**53), max_size=2),
        "updatedAt": st.none(),
        "}\n    {": texts,
    },
)
state = st.fixed_dictionaries({"items": st.lists(record, max_size=8), "categories": st.lists(record, max_size=3)})


def lowdb_bytes(document: dict[str, Any]) -> bytes:
    """What lowdb writes: 2-space indented JSON."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def materialised(version: FileVersion) -> dict[str, Any]:
    """The version's collections as plain lists, whichever way they were read."""
    out: dict[str, Any] = {}
    for spec in SPECS:
        value = version.collection(spec)
        out[spec.collection] = value if isinstance(value, list) else [value.record(i) for i in range(len(value))]
    return out


def assert_same_as_whole_parse(reader: VersionReader, path: Path) -> None:
    """The reader's version equals `read_file`'s: the same records, position and top-level keys."""
    try:
        whole = read_file(path, COLLECTIONS)
    except UnreadableFile:
        with pytest.raises(UnreadableFile):
            reader.read(path)
        return
    version = reader.read(path)
    assert materialised(version) == {c: whole.document.get(c, []) for c in COLLECTIONS}
    assert version.position == whole.position
    assert {k: v for k, v in version.document.items() if k not in version.records} == {
        k: v for k, v in whole.document.items() if k not in version.records
    }


MUTATIONS = Mutations(state, record, texts, COLLECTIONS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), state)
def test_every_version_equals_a_whole_parse(tmp_path: Path, data: st.DataObject, document: dict[str, Any]) -> None:
    reader = VersionReader(SPECS)
    path = tmp_path / "library.json"
    for _ in range(8):
        form = data.draw(st.sampled_from(["lowdb", "lowdb", "lowdb", "minified", "4-space"]))
        if form == "lowdb":
            raw = lowdb_bytes(document)
        elif form == "minified":
            raw = orjson.dumps(document)
        else:
            raw = lowdb_bytes(document).replace(b"\n  ", b"\n    ")
        path.write_bytes(raw)
        assert_same_as_whole_parse(reader, path)
        document = MUTATIONS.mutated(data, document)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state, st.integers(1, 200))
def test_a_first_read_cut_in_chunks_finds_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], chunk: int
) -> None:
    """A first read splits the file SPLIT_BYTES at a time: chunks of a few bytes (separators across
    every cut) give the records, offsets and version a whole parse gives."""
    monkeypatch.setattr(lowdb_records, "SPLIT_BYTES", chunk)
    path = tmp_path / "library.json"
    path.write_bytes(lowdb_bytes(document))
    reader = VersionReader(SPECS)
    assert_same_as_whole_parse(reader, path)
    for records in reader.read(path).records.values():
        assert records.starts == lowdb_records._starts(records.data or b"", records.body, records.end)


def items(n: int) -> list[dict[str, Any]]:
    """n workspace-like records."""
    return [{"id": f"item-1762600000000-{i:05d}", "title": f"t{i}", "tags": ["a"], "updatedAt": None} for i in range(n)]


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every slice the reader parses from now on."""
    calls: list[bytes] = []
    real = lowdb_records.parse_slice
    monkeypatch.setattr(lowdb_records, "parse_slice", lambda piece: calls.append(piece) or real(piece))
    return calls


@pytest.mark.parametrize(
    ("change", "parsed"),
    [
        ("edit", 3),  # the edited record and its two neighbours, whose bounds hold the edit
        ("append", 2),
        ("delete-last", 1),
        ("prepend", 2),
    ],
)
def test_a_small_change_parses_only_the_records_around_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, parsed: int
) -> None:
    path = tmp_path / "library.json"
    records = items(2000)
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    reader = VersionReader(SPECS)
    reader.read(path)
    if change == "edit":
        records[1000] = {**records[1000], "title": "edited"}
    elif change == "append":
        records.append({"id": "new", "title": "new"})
    elif change == "delete-last":
        records.pop()
    else:
        records.insert(0, {"id": "first", "title": "first"})
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    calls = counting_parses(monkeypatch)
    version = reader.read(path)
    assert 0 < len(calls) <= parsed
    assert materialised(version)["items"] == records


def test_a_later_collection_is_patched_at_its_shifted_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "library.json"
    document = {"items": items(500), "categories": items(500)}
    reader = VersionReader(SPECS)
    for change in range(3):
        document["items"] = [*document["items"], {"id": f"new-{change}", "title": "a longer record than most"}]
        path.write_bytes(lowdb_bytes(document))
        reader.read(path)
        document["categories"][change] = {**document["categories"][change], "title": "edited"}
        path.write_bytes(lowdb_bytes(document))
        calls = counting_parses(monkeypatch)
        version = reader.read(path)
        monkeypatch.undo()
        assert 0 < len(calls) <= 3
        assert materialised(version) == document


def test_a_hand_broken_record_falls_back_to_the_whole_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    records = items(50)
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    reader = VersionReader(SPECS)
    reader.read(path)
    data = lowdb_bytes({"items": records, "categories": []}).replace(b'"t25"', b'"t25', 1)
    path.write_bytes(data)
    with pytest.raises(UnreadableFile):
        reader.read(path)
    # The broken version left nothing behind: the next good one is read exactly.
    records[25] = {**records[25], "title": "fixed"}
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    assert materialised(reader.read(path))["items"] == records


def test_the_content_hash_resumes_from_the_bytes_both_versions_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edits before, inside and after many hash steps, a shorter and a longer file: every sha is the file's."""
    monkeypatch.setattr(lowdb_reader, "HASH_STEP", 256)
    path = tmp_path / "library.json"
    records = items(300)
    reader = VersionReader(SPECS)
    for change in ("none", 0, 150, 299, "append", "delete", "none", 1):
        if change == "append":
            records.append({"id": "new", "title": "a longer record than most of the others"})
        elif change == "delete":
            del records[10]
        elif change != "none":
            records[int(change)] = {**records[int(change)], "title": f"edited {change}"}
        data = lowdb_bytes({"items": records, "categories": []})
        path.write_bytes(data)
        assert reader.read(path).position["sha"] == hashlib.sha256(data).hexdigest(), change
