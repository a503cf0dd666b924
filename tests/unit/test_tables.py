"""Table specs: validation reasons, camelCase mapping, hashing, and the PG → LowDB inverse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import metrics
from syncd.config import CollectionSettings
from syncd.errors import InvalidRecord
from syncd.tables import (
    DOCUMENTATION_FILES,
    DOCUMENTATION_SYSTEMS,
    WORKSPACE_CATEGORIES,
    TableSpec,
    lowdb_record_from_row,
    record_hash,
    spec_for_table,
    specs_for_layout,
    workspace_items,
)

ITEMS = workspace_items("items")
ITEM = {
    "id": "1f9b6598-6e08-4825-a686-638a5d6b0e4a",
    "title": "Teste API",
    "description": "Item de teste para verificar API",
    "category": "dashboard",
    "priority": "medium",
    "status": "new",
    "tags": ["teste"],
    "createdAt": "2025-10-23T22:45:24.940Z",
    "updatedAt": None,
}


def as_mapping(spec_columns: tuple[str, ...], row: tuple[object, ...]) -> dict[str, object]:
    """A row tuple as the column → value mapping an asyncpg Record offers."""
    return dict(zip(spec_columns, row, strict=True))


def test_item_maps_camel_case_to_columns_with_binary_copy_types() -> None:
    """createdAt → created_at as an aware datetime; tags a list; defaults for absent keys."""
    row = as_mapping(ITEMS.columns, ITEMS.to_row(ITEM))
    assert row["created_at"] == datetime(2025, 10, 23, 22, 45, 24, 940000, tzinfo=UTC)
    assert row["updated_at"] is None
    assert row["tags"] == ["teste"]
    assert row["metadata"] == {}
    assert row["extra"] == {}
    assert row["row_hash"] == record_hash(ITEM)
    assert len(row["row_hash"]) == 16


def test_short_name_maps_to_short_name_and_integer_ids_become_text() -> None:
    """Documentation's integer ids are text in PG; shortName → short_name."""
    record = {"id": 7, "name": "Workspace", "shortName": "WS", "port": 3200, "status": "online"}
    row = as_mapping(DOCUMENTATION_SYSTEMS.columns, DOCUMENTATION_SYSTEMS.to_row(record))
    assert row["id"] == "7"
    assert row["short_name"] == "WS"
    assert row["port"] == 3200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"category": "Bad Category"}, "category must match"),
        ({"title": "   "}, "title must not be blank"),
        ({"title": None}, "title is required"),
        ({"createdAt": "yesterday"}, "createdAt is not an ISO 8601 timestamp"),
        ({"createdAt": None}, "createdAt is required"),
    ],
)
def test_a_required_value_that_cannot_be_derived_is_held(change: dict[str, object], reason: str) -> None:
    """Each rule mirrors a CHECK constraint and says which field broke it."""
    with pytest.raises(InvalidRecord) as caught:
        ITEMS.to_row({**ITEM, **change})
    assert reason in caught.value.reason
    assert caught.value.key == ITEM["id"]


CATEGORY = {"id": "c", "name": "c"}
FILE = {"id": 1, "filename": "f.txt"}
SYSTEM = {"id": 1, "name": "Workspace"}


@pytest.mark.parametrize(
    ("spec", "record", "change", "reason"),
    [
        (ITEMS, ITEM, {"createdAt": 1e300}, "createdAt is 1e+300 ms since the epoch, outside years 1..9999"),
        (ITEMS, ITEM, {"createdAt": -1e300}, "createdAt is -1e+300 ms since the epoch"),
        # What orjson reads `99999999999999999999` as; a Python caller may hand over the integer itself.
        (ITEMS, ITEM, {"createdAt": 1e20}, "createdAt is 1e+20 ms since the epoch"),
        (ITEMS, ITEM, {"createdAt": 99999999999999999999}, "createdAt is an integer of 67 bits"),
        (ITEMS, ITEM, {"createdAt": 253402300800000}, "createdAt is 253402300800000 ms since the epoch"),
        (ITEMS, ITEM, {"createdAt": -62135596800001}, "createdAt is -62135596800001 ms since the epoch"),
        (ITEMS, ITEM, {"createdAt": "10000-01-01T00:00:00Z"}, "createdAt is not an ISO 8601 timestamp"),
        (ITEMS, ITEM, {"createdAt": "9999-12-31T23:59:59.9995Z"}, "createdAt is outside years 1..9999 in UTC"),
        (ITEMS, ITEM, {"createdAt": "9999-12-31T23:00:00-05:00"}, "createdAt is outside years 1..9999 in UTC"),
        (ITEMS, ITEM, {"createdAt": "0001-01-01T00:00:00+01:00"}, "createdAt is outside years 1..9999 in UTC"),
        (WORKSPACE_CATEGORIES, CATEGORY, {"display_order": 2**70}, "display_order is an integer of 71 bits"),
        (WORKSPACE_CATEGORIES, CATEGORY, {"display_order": -(2**70)}, "display_order is an integer of 71 bits"),
        (DOCUMENTATION_FILES, FILE, {"size": 2**70}, "size is an integer of 71 bits"),
        (DOCUMENTATION_FILES, FILE, {"size": -(2**70)}, "size is an integer of 71 bits"),
        (DOCUMENTATION_SYSTEMS, SYSTEM, {"port": 2**70}, "port is an integer of 71 bits"),
        (ITEMS, ITEM, {"title": 2**70}, "title is an integer of 71 bits"),
        (ITEMS, ITEM, {"tags": ["ok", 2**70]}, "tags[1] is an integer of 71 bits"),
        (ITEMS, ITEM, {"metadata": {"n": 2**70}}, "record.metadata.n is an integer of 71 bits"),
        (ITEMS, ITEM, {"votes": 2**70}, "record.votes is an integer of 71 bits"),
        (ITEMS, ITEM, {"description": "a\x00b"}, "description holds a NUL"),
    ],
)
def test_a_value_no_column_or_jsonb_holds_is_held_naming_its_field(
    spec: TableSpec, record: dict[str, object], change: dict[str, object], reason: str
) -> None:
    """An instant outside Python's datetime (years 1..9999 in UTC, asyncpg's and the reverse path's),
    an integer orjson cannot write, a NUL: one line naming the record and the field, no raw
    OverflowError or TypeError."""
    with pytest.raises(InvalidRecord) as caught:
        spec.to_row({**record, **change})
    assert reason in caught.value.reason
    assert caught.value.key == spec.record_key(record)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "record", "change", "column"),
    [
        (ITEMS, ITEM, {"updatedAt": 1e300}, "updated_at"),
        (WORKSPACE_CATEGORIES, CATEGORY, {"display_order": 1.5}, "sort_order"),
        (WORKSPACE_CATEGORIES, CATEGORY, {"display_order": 1e300}, "sort_order"),
        (DOCUMENTATION_FILES, FILE, {"size": 2**63}, "size"),
        (DOCUMENTATION_FILES, FILE, {"size": 1e300}, "size"),
    ],
)
def test_a_number_its_column_refuses_in_an_optional_field_is_null_with_the_raw_value_kept(
    spec: TableSpec, record: dict[str, object], change: dict[str, object], column: str
) -> None:
    """A float for an integer column, past bigint, an instant past year 9999: PostgreSQL never sees
    it; the column takes NULL (a failed rule's coercion) and `extra` the value as the file holds it."""
    row = as_mapping(spec.columns, spec.to_row({**record, **change}))
    assert row[column] is None
    assert row["extra"] == change


def test_the_first_and_last_millisecond_of_the_years_are_kept() -> None:
    """Years 1..9999 in UTC: both ends map, as epoch ms and as text."""
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)
    for raw, stored in (
        (-62135596800000, first),
        (253402300799999, last),
        (253402300799999.4, last),
        ("0001-01-01T00:00:00.000Z", first),
        ("9999-12-31T23:59:59.9994Z", last),
        ("0001-01-01T00:00:00-01:00", first.replace(hour=1)),
    ):
        assert as_mapping(ITEMS.columns, ITEMS.to_row({**ITEM, "createdAt": raw}))["created_at"] == stored, raw


SAO_PAULO = ZoneInfo("America/Sao_Paulo")


@pytest.mark.parametrize(
    ("change", "column", "stored"),
    [
        ({"priority": "urgent"}, "priority", "medium"),
        ({"status": "done"}, "status", "new"),
        ({"createdBy": 42}, "created_by", "42"),
        ({"metadata": '{"source": "v1"}'}, "metadata", {"source": "v1"}),
        ({"metadata": "not json"}, "metadata", {}),
        ({"metadata": []}, "metadata", {}),
        ({"tags": ["ok", 3]}, "tags", ["ok", "3"]),
        ({"tags": "solo"}, "tags", ["solo"]),
        ({"title": 12}, "title", "12"),
        ({"updatedAt": "garbage"}, "updated_at", None),
        ({"createdAt": 1762596000000}, "created_at", datetime(2025, 11, 8, 10, 0, tzinfo=UTC)),
        ({"createdAt": "2025-11-04 10:00:00"}, "created_at", datetime(2025, 11, 4, 13, 0, tzinfo=UTC)),
        ({"createdAt": "2025-11-04T10:00:00.123456Z"}, "created_at", datetime(2025, 11, 4, 10, 0, 0, 123000, UTC)),
        ({"createdAt": "2025-11-04T10:00:00.1235Z"}, "created_at", datetime(2025, 11, 4, 10, 0, 0, 124000, UTC)),
        ({"createdAt": "2025-11-04T10:00:00Z"}, "created_at", datetime(2025, 11, 4, 10, 0, tzinfo=UTC)),
    ],
)
def test_what_the_service_accepts_is_coerced_and_kept_raw_in_extra(
    change: dict[str, object], column: str, stored: object
) -> None:
    """Legacy values are not held: the column takes the documented coercion, `extra` the raw
    value, and the inverse gives the record back exactly as it was."""
    spec = replace(ITEMS, zone=SAO_PAULO)  # zone-less times are read as the service's local time
    record = {**ITEM, **change}
    row = as_mapping(spec.columns, spec.to_row(record))
    assert row[column] == stored
    assert row["extra"] == change
    back = lowdb_record_from_row(spec, row, like=record)
    assert orjson.dumps(back) == orjson.dumps(record)


def test_a_coerced_value_the_service_changed_since_is_written_as_the_new_value() -> None:
    """The raw value in extra stands for the column only while the column still holds its coercion."""
    record = {**ITEM, "createdBy": 42, "createdAt": "2025-11-04 10:00:00"}
    row = as_mapping(ITEMS.columns, ITEMS.to_row(record))
    row |= {"created_by": "u-7", "created_at": datetime(2025, 11, 5, tzinfo=UTC)}
    back = lowdb_record_from_row(ITEMS, row, like=record)
    assert (back["createdBy"], back["createdAt"]) == ("u-7", "2025-11-05T00:00:00.000Z")


def test_records_without_usable_id_are_invalid_without_a_key() -> None:
    """No id, an empty id or a boolean id: the record cannot be keyed."""
    for bad in ({k: v for k, v in ITEM.items() if k != "id"}, {**ITEM, "id": ""}, {**ITEM, "id": True}):
        with pytest.raises(InvalidRecord) as caught:
            ITEMS.to_row(bad)
        assert caught.value.key is None
    with pytest.raises(InvalidRecord, match="must be an object"):
        ITEMS.to_row(["not", "a", "record"])


def test_unknown_keys_go_to_extra_and_count_as_drift() -> None:
    """PUT merges arbitrary keys: kept in extra, counted per table and field."""
    counter = metrics.SCHEMA_DRIFT.labels("workspace.workspace_items", "votes")
    before = counter._value.get()
    row = as_mapping(ITEMS.columns, ITEMS.to_row({**ITEM, "votes": 3, "owner": {"n": 1}}))
    assert row["extra"] == {"votes": 3, "owner": {"n": 1}}
    assert counter._value.get() == before + 1


def test_hash_is_canonical_over_key_order_and_sensitive_to_types() -> None:
    """Key order does not matter; true versus 1 does."""
    assert record_hash({"a": 1, "b": 2}) == record_hash({"b": 2, "a": 1})
    assert record_hash({"a": 1}) != record_hash({"a": True})
    assert record_hash({"a": 1}) != record_hash({"a": 1.5})


@pytest.mark.parametrize(
    "record",
    [
        ITEM,
        {**ITEM, "id": "item-1762600000000-k3j9x2a", "updatedAt": "2025-11-08T10:00:00.000Z", "votes": 2},
        {**ITEM, "id": "12", "createdBy": "u1", "updatedBy": None, "metadata": {"x": [1, 2]}},
    ],
)
def test_inverse_restores_the_upstream_record(record: dict[str, object]) -> None:
    """row → LowDB record gives back the source record, so its hash equals row_hash."""
    row = as_mapping(ITEMS.columns, ITEMS.to_row(record))
    back = lowdb_record_from_row(ITEMS, row, like=record)
    assert orjson.dumps(back) == orjson.dumps(record)
    assert record_hash(back) == row["row_hash"]
    # Without the file's record (PostgreSQL created it): the current service's full shape.
    fresh = lowdb_record_from_row(ITEMS, row)
    assert {"createdBy", "updatedBy", "metadata"} <= fresh.keys()


def test_inverse_of_documentation_restores_integer_ids() -> None:
    """Numeric text ids go back to integers for the integer-counter layout."""
    (_, ideas, links, _) = specs_for_layout("documentation")
    record = {"id": 3, "url": "https://x", "title": "t", "idea_id": 9}
    row = as_mapping(links.columns, links.to_row(record))
    assert lowdb_record_from_row(links, row) == record
    assert ideas.table == "documentation.documentation_ideas"


def test_layouts_and_generic_documents() -> None:
    """Every layout names its tables; generic stores (collection, id) → doc."""
    assert [s.collection for s in specs_for_layout("workspace")] == ["categories", "items"]
    assert specs_for_layout("ideas-mvp")[0].table == "workspace.workspace_items"
    (notes,) = specs_for_layout("generic", [CollectionSettings(name="notes", key="slug")])
    row = notes.to_row({"slug": "a", "body": 1})
    assert row[:3] == ("notes", "a", {"slug": "a", "body": 1})
    assert notes.key == ("collection", "id")
    assert lowdb_record_from_row(notes, as_mapping(notes.columns, row)) == {"slug": "a", "body": 1}
    assert spec_for_table(specs_for_layout("workspace"), "workspace.workspace_items").collection == "items"


def test_categories_map_to_the_services_columns_and_back_without_loss() -> None:
    """LowDB's {id, name, description, color, display_order, active} ↔ the service's columns."""
    (categories, _) = specs_for_layout("workspace")
    seeded = {"id": "bug", "name": "bug", "description": "Bugs", "color": "#f00", "display_order": 2, "active": True}
    row = as_mapping(categories.columns, categories.to_row(seeded))
    assert (row["display_name"], row["sort_order"], row["is_active"], row["created_at"]) == ("bug", 2, True, None)
    assert row["extra"] == {}
    assert list(lowdb_record_from_row(categories, row).items()) == list(seeded.items())
    # A category the service created in PostgreSQL: what LowDB lacks is written as extra keys.
    created = datetime(2025, 11, 8, 10, 0, tzinfo=UTC)
    row |= {"id": "ux", "name": "ux", "display_name": "User experience", "color": None, "created_at": created}
    back = lowdb_record_from_row(categories, row)
    assert back["display_name"] == "User experience"
    assert back["created_at"] == "2025-11-08T10:00:00.000Z"
    assert "updated_at" not in back
    assert categories.to_row(back)[:-1] == tuple(row[c] for c in categories.columns[:-1])


def test_an_unchanged_nested_object_keeps_the_files_key_order() -> None:
    """jsonb returns `{"a": 2, "b": 1}` for `{"b": 1, "a": 2}`: the file's order is kept while equal."""
    record = {**ITEM, "metadata": {"b": 1, "a": 2}, "owner": {"z": 0, "y": [1, {"d": 1, "c": 2}]}}
    row = as_mapping(ITEMS.columns, ITEMS.to_row(record))
    row |= {"metadata": {"a": 2, "b": 1}, "extra": {"owner": {"y": [1, {"c": 2, "d": 1}], "z": 0}}}
    assert orjson.dumps(lowdb_record_from_row(ITEMS, row, like=record)) == orjson.dumps(record)
    row["metadata"] = {"a": 3, "b": 1}
    assert lowdb_record_from_row(ITEMS, row, like=record)["metadata"] == {"a": 3, "b": 1}


_SPECS = (ITEMS, *specs_for_layout("workspace"), *specs_for_layout("documentation"))
_RAW = [
    *[None, "", " ", "t", "medium", "urgent", "done", "online", "banco-dados", "Bad Category", "a\x00b", "12", "-3"],
    *["true", "{}", '{"a": 1}', "2025-10-23T22:46:19.745Z", "2025-10-23T22:46:19Z", "2025-10-23 22:46:19"],
    *["2025-10-23T22:46:19.7451Z", "2025-10-23T22:46:19.745+02:00", "2025-10-23T22:46:19.745"],
    "9999-99-99T99:99:99.999Z",
    *[0, 1, 7, -7, 70000, 2**40, 1.0, 1.5, True, False, 1762596000000, [], ["a", "b"], ["a", 3], ["a\x00"], [None]],
    *[{}, {"k": [1, {"n": None}]}, {"k": "\x00"}],
    # Hostile numbers and instants: held or coerced with a reason, never a raw OverflowError or TypeError.
    *[1e300, -1e300, 1e20, 2**70, -(2**70), 2**63, 253402300800000, -62135596800001, [2**70], {"n": 2**70}],
    *["9999-12-31T23:59:59.9995Z", "0001-01-01T00:00:00+01:00", "10000-01-01T00:00:00Z"],
]
_KIND_VALUE = {"timestamp": "2025-10-23T22:46:19.745Z", "tags": ["a"], "object": {}, "int": 1, "bool": True}


def _valid(spec: TableSpec) -> dict[str, object]:
    """A record every field of `spec` takes as it is."""
    record: dict[str, object] = {}
    for f in spec.fields:
        value = _KIND_VALUE.get(f.kind, 5 if spec.int_ids and f.kind in ("id", "ref") else "abc")
        record[f.source] = sorted(f.choices)[0] if f.choices else value
    return record


def _mapped(spec: TableSpec, record: dict[str, object], stated: dict[str, object] | None) -> str:
    try:
        return repr(spec.to_row(record, b"h", stated))
    except InvalidRecord as exc:
        return f"held: {exc.key} {exc.reason}"


@pytest.mark.parametrize("spec", _SPECS, ids=lambda s: s.collection)
def test_the_exact_readers_map_as_the_full_mapping_does(spec: TableSpec) -> None:
    """Each field read as it is (`syncd.fields.exact`) gives what `_column_value` would, for every
    kind of raw value in each field of a valid record, and the key absent: same row (types included),
    same `extra`, same reason to hold. `stated={}` takes the full mapping for every field."""
    base = _valid(spec)
    assert _mapped(spec, base, None).startswith("(")
    for f in spec.fields:
        others = {k: v for k, v in base.items() if k != f.source}
        for record in (others, *({**base, f.source: raw} for raw in _RAW)):
            assert _mapped(spec, record, None) == _mapped(spec, record, {}), (f.source, record.get(f.source))


@settings(max_examples=200, deadline=None)
@given(spec=st.sampled_from(_SPECS), data=st.data())
def test_the_exact_readers_agree_on_records_changed_in_several_fields(spec: TableSpec, data: st.DataObject) -> None:
    """Several fields changed at once, unknown keys too: the same row as the full mapping."""
    names = [*(f.source for f in spec.fields), "votes"]
    changes = data.draw(st.dictionaries(st.sampled_from(names), st.sampled_from(_RAW), max_size=4))
    absent = data.draw(st.sets(st.sampled_from(names)))
    record = {k: v for k, v in {**_valid(spec), **changes}.items() if k not in absent}
    assert _mapped(spec, record, None) == _mapped(spec, record, {})
