"""Poison records: diagnosed per record in a lowdb file, whatever the file around them holds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import InvalidRecord
from syncd.lowdb.diff import diff
from syncd.lowdb.reader import VersionReader
from syncd.poison import MAX_DEPTH, Poison, diagnose, problem, storable
from syncd.quarantine import Held
from syncd.tables import WORKSPACE_CATEGORIES, record_hash, workspace_items
from tests.lowdb_files import item

ITEMS = workspace_items("items")
SPECS = (WORKSPACE_CATEGORIES, ITEMS)
NOTHING_HELD = Held(frozenset(), frozenset())

# Each kind as the bytes Node's JSON.stringify (or a hand edit Node still reads) leaves in the file.
POISON_BYTES = {
    "out-of-range number": (b"1e400", "number 1e400 is out of range"),
    "negative out-of-range number": (b"-2.5e999", "number -2.5e999 is out of range"),
    "invalid utf-8": (b'"caf\xe9"', "invalid UTF-8 at byte"),
    "lone surrogate": (b'"\\udc00x"', "lone UTF-16 surrogate"),
    "deeper than orjson reads": (b"[" * 1100 + b"]" * 1100, "nested deeper than"),
}


def slice_of(record: dict[str, Any], value: bytes) -> bytes:
    """A record's bytes between `    {` and `\\n    }` in lowdb's layout, `value` in its `v` field."""
    text = json.dumps({**record, "v": "MARK"}, indent=2).encode()
    body = text[1:-2].replace(b"\n", b"\n    ")
    return body.replace(b'"MARK"', value)


@pytest.mark.parametrize("kind", list(POISON_BYTES))
def test_each_kind_is_diagnosed_with_its_key(kind: str) -> None:
    """Node reads the record; orjson does not: a Poison with the record's id and a reason."""
    value, reason = POISON_BYTES[kind]
    poison = diagnose(slice_of(item("k1"), value), "id")
    assert poison is not None
    assert reason in poison.reason
    assert poison.key == "k1"
    orjson.dumps(poison.raw)  # jsonb can hold what quarantine keeps


def test_a_syntax_error_is_not_poison() -> None:
    """Node cannot read it either: not one record's problem (the file is unreadable, retried)."""
    assert diagnose(slice_of(item("k1"), b'"unterminated'), "id") is None
    assert diagnose(slice_of(item("k1"), b"NaN"), "id") is None


def test_problem_finds_what_postgresql_cannot_hold() -> None:
    """NUL in a value or key, a lone surrogate, nesting past the limit, an integer orjson cannot
    write; None for storable values."""
    deep: Any = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert problem({"a": [1, {"b": "x\x00"}]}, "record") == (
        "record.a[1].b holds a NUL character (\\u0000): PostgreSQL text and jsonb cannot store it"
    )
    assert "key 'k\\x00'" in (problem({"k\x00": 1}, "record") or "")
    assert "lone UTF-16 surrogate" in (problem(["\ud800"], "r") or "")
    assert f"nested deeper than {MAX_DEPTH} levels" in (problem(deep, "record") or "")
    assert problem(deep[0], "record") is None
    assert (
        problem({"n": [2**64]}, "record")
        == "record.n[0] is an integer of 65 bits, beyond the 64 that orjson writes to jsonb"
    )
    assert "integer of 64 bits" in (problem(-(2**63) - 1, "r") or "")
    assert problem({"ok": ["é", 1.5, None, {"x": 2**64 - 1, "y": -(2**63)}]}, "record") is None


def test_storable_keeps_storable_records_and_wraps_the_rest() -> None:
    """A storable record is itself; poison becomes its reason and JSON text, which jsonb holds."""
    good = item("a")
    assert storable(good) is good
    wrapped = storable({"id": "a", "title": "x\x00y"})
    assert wrapped["error"].startswith("record.title holds a NUL")
    assert "\\u0000" in wrapped["text"]
    assert b"\\u0000" not in orjson.dumps(wrapped).replace(b"\\\\u0000", b"")
    assert storable(Poison("why", "{}")) == {"error": "why", "text": "{}"}
    huge = storable({"id": "a", "votes": 2**70})
    assert huge == {
        "error": "record.votes is an integer of 71 bits, beyond the 64 that orjson writes to jsonb",
        "text": '{"id": "a", "votes": 1180591620717411303424}',
    }


def test_typed_columns_refuse_what_their_column_cannot_hold() -> None:
    """A NUL in a text or tag, an id no index entry holds; an integer past `integer` is coerced."""
    for bad, reason in (
        (item("a", "x\x00"), "title holds a NUL"),
        (item("a", tags=["ok", "n\x00"]), "tags[1] holds a NUL"),
        (item("a", metadata={"k": "\x00"}), "record.metadata.k holds a NUL"),
        (item("a", extra={"deep": "\x00"}), "record.extra.deep holds a NUL"),
    ):
        with pytest.raises(InvalidRecord, match=re.escape(reason)):
            ITEMS.to_row(bad)
    # An integer past `integer` is no poison: the column takes NULL, the value rides in extra.
    row = WORKSPACE_CATEGORIES.to_row({"id": "c", "name": "c", "display_order": 2**31})
    assert row[WORKSPACE_CATEGORIES.columns.index("sort_order")] is None
    assert row[-2] == {"display_order": 2**31}
    with pytest.raises(InvalidRecord, match="over the 1000 an index key holds"):
        ITEMS.to_row(item("x" * 1001))


records = st.lists(
    st.builds(
        lambda i, t: item(f"id-{i}", t),
        st.integers(0, 10**6),
        st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(str.strip),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda r: r["id"],
)


@settings(max_examples=60, deadline=None)
@given(records=records, data=st.data())
def test_poison_anywhere_in_a_file_quarantines_exactly_that_record(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Every other record reads exactly as written; the poisoned one is quarantined under its id."""
    at = data.draw(st.integers(0, len(records) - 1))
    kind = data.draw(st.sampled_from(sorted(POISON_BYTES)))
    first_read = data.draw(st.booleans())
    value, reason = POISON_BYTES[kind]
    path: Path = tmp_path_factory.mktemp("poison") / "db.json"
    reader = VersionReader(SPECS)
    document = {"items": [{**r, "v": "MARK"} if i == at else r for i, r in enumerate(records)], "categories": []}
    text = json.dumps(document, indent=2, ensure_ascii=False).encode()
    if not first_read:  # the poison arrives as an edit of a file read before (the patched path)
        path.write_bytes(json.dumps({**document, "items": records}, indent=2, ensure_ascii=False).encode())
        reader.read(path)
    path.write_bytes(text.replace(b'"MARK"', value))
    result = diff(reader.read(path), SPECS, {}, NOTHING_HELD)
    [held] = result.quarantine
    assert (held.key, held.table) == (records[at]["id"], ITEMS.table)
    assert held.reason.startswith(f"items[{at}]: ")
    assert reason in held.reason
    upserted = {row[0]: row[-1] for row in result.tables[1].upserts}
    assert upserted == {r["id"]: record_hash(r) for i, r in enumerate(records) if i != at}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=())),  # NUL and lone surrogates included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_whatever_a_record_holds_quarantine_can_store_it(value: Any) -> None:
    """NULs, lone surrogates, ±Infinity anywhere: `storable` gives what jsonb holds, and keeps the rest as is."""
    record = {"id": "k", "v": value}
    raw = storable(record)
    assert problem(raw, "raw") is None
    orjson.dumps(raw)
    assert (raw is record) == (problem(record, "record") is None)
