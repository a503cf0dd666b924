"""Table specs: validation reasons, camelCase mapping, hashing, and the PG → LowDB inverse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd import metrics
from syncd.config import CollectionSettings
from syncd.errors import InvalidRecord
from syncd.tables import (
    DOCUMENTATION_SYSTEMS,
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
        ({"priority": "urgent"}, "priority must be one of"),
        ({"status": "done"}, "status must be one of"),
        ({"category": "Bad Category"}, "category must match"),
        ({"title": "   "}, "title must not be blank"),
        ({"title": None}, "title is required"),
        ({"createdAt": "yesterday"}, "createdAt is not an ISO 8601 timestamp"),
        ({"createdAt": "2025-10-23T22:45:24"}, "createdAt has no timezone"),
        ({"tags": ["ok", 3]}, "tags must be a list of strings"),
        ({"metadata": []}, "metadata must be an object"),
        ({"title": 12}, "title must be a string"),
    ],
)
def test_invalid_items_name_the_field_and_the_rule(change: dict[str, object], reason: str) -> None:
    """Each rule mirrors a CHECK constraint and says which field broke it."""
    with pytest.raises(InvalidRecord) as caught:
        ITEMS.to_row({**ITEM, **change})
    assert reason in caught.value.reason
    assert caught.value.key == ITEM["id"]


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
    back = lowdb_record_from_row(ITEMS, row)
    expected = {k: v for k, v in record.items() if not (k == "updatedBy" and v is None)}
    assert back == expected
    if back == record:
        assert record_hash(back) == row["row_hash"]


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
