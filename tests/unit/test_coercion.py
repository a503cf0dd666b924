"""A stated coercion (`syncd quarantine accept`): what it takes, what it refuses, the row it makes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.coercion import accepted_row, check_acceptable, stated
from syncd.cutover.foreign import REASON as FOREIGN
from syncd.cutover.verify import content_digest, file_digests
from syncd.errors import BadCoercion, InvalidRecord, NotAcceptable
from syncd.poison import Poison
from syncd.quarantine import Accepted, Entry
from syncd.tables import WORKSPACE_CATEGORIES, record_hash, workspace_items

ITEMS = workspace_items("items")
NOW = datetime(2026, 12, 1, 19, 30, 0, 123456, tzinfo=UTC)
HELD = {
    "id": "legacy-1",
    "title": "",
    "category": "Ideas & Notes",
    "priority": "high",
    "createdAt": "2023-04-01T10:00:00.000Z",
    "note": "an unknown key",
}


def entry(raw: Any, *, key: str | None = "legacy-1", reason: str = "items[3]: title must not be blank") -> Entry:
    """A held quarantine row of the workspace items."""
    return Entry(1, "w", ITEMS.table, key, reason, "held", NOW, raw)


def test_values_are_the_columns_exact_values_in_the_files_form() -> None:
    sets = [("title", "Untitled"), ("tags", '["a", "b"]'), ("updatedAt", "2023-04-01 10:00:00")]
    got = stated(ITEMS, sets, [("createdAt", "now"), ("description", "null"), ("priority", "default")], NOW)
    assert got == {
        "title": "Untitled",
        "tags": ["a", "b"],
        "updatedAt": "2023-04-01T10:00:00.000Z",  # read in the file's zone, written as toISOString()
        "createdAt": "2026-12-01T19:30:00.123Z",
        "description": None,
        "priority": "medium",  # the column's default, stated
    }
    assert stated(WORKSPACE_CATEGORIES, [("display_order", "3"), ("active", "false")], [], NOW) == {
        "display_order": 3,
        "active": False,
    }


@pytest.mark.parametrize(
    ("sets", "rules", "message"),
    [
        ([("nope", "1")], [], "--set nope=1: workspace.workspace_items has no field 'nope' (fields: category, "),
        ([("id", "other")], [], "--set id=other: id is the record's key; a coercion cannot change it"),
        ([("priority", "urgent")], [], "--set priority=urgent: its column cannot hold it: priority must be one of"),
        ([("category", "Not A Slug")], [], "--set category=Not A Slug: its column cannot hold it: category must match"),
        ([("createdAt", "yesterday")], [], "--set createdAt=yesterday: its column cannot hold it: createdAt is not an"),
        ([("tags", "a,b")], [], "--set tags=a,b: tags is a tags field: state its value as JSON"),
        ([("tags", '"a"')], [], '--set tags="a": its column cannot hold it: tags must be a list of strings'),
        ([("title", "x")], [("title", "default")], "--coerce title=default: title is stated twice"),
        ([], [("title", "default")], "--coerce title=default: its column cannot hold it: title is required"),
        ([], [("priority", "null")], "--coerce priority=null: the column of priority is NOT NULL"),
        ([], [("title", "now")], "--coerce title=now: title is a text field, not a timestamp"),
        ([], [("title", "upper")], "--coerce title=upper: no coercion 'upper' (coercions: default, null, now)"),
    ],
)
def test_an_unknown_field_or_a_value_the_column_cannot_hold_is_one_line_naming_the_setting(
    sets: list[tuple[str, str]], rules: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(BadCoercion) as caught:
        stated(ITEMS, sets, rules, NOW)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_row_keeps_the_records_own_values_in_extra_and_its_hash() -> None:
    values = stated(ITEMS, [("title", "Untitled"), ("category", "ideas")], [], NOW)
    row, digest = accepted_row(ITEMS, entry(HELD), values)
    columns = dict(zip(ITEMS.columns, row, strict=True))
    assert (columns["title"], columns["category"], columns["priority"]) == ("Untitled", "ideas", "high")
    assert columns["extra"] == {"title": "", "category": "Ideas & Notes", "note": "an unknown key"}
    assert digest == record_hash(HELD) == columns["row_hash"]
    with pytest.raises(InvalidRecord):
        ITEMS.to_row(HELD)  # what it was held for


def test_values_that_leave_the_record_invalid_name_what_is_missing() -> None:
    values = stated(ITEMS, [("title", "Untitled")], [], NOW)
    with pytest.raises(BadCoercion) as caught:
        accepted_row(ITEMS, entry(HELD), values)
    assert str(caught.value) == (
        "record 1: it would still be held: category must match [a-z0-9-]{1,100}, got 'Ideas & Notes' "
        "(state it: --set category=…)"
    )


@pytest.mark.parametrize(
    ("held", "message"),
    [
        (entry({"title": "no id"}, key=None), "it has no usable id"),
        (entry(HELD, reason="items[3]: duplicate id 'legacy-1': 2 records carry it"), "its id is duplicated"),
        (entry(HELD, reason=FOREIGN), "it is a foreign write over PostgreSQL's state"),
        (entry(Poison("title holds a NUL character", '{"id": "legacy-1"}', "legacy-1").raw), "only its text is kept"),
    ],
)
def test_a_record_no_coercion_resolves_is_refused(held: Entry, message: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        check_acceptable(ITEMS, held)
    assert str(caught.value).startswith(f"quarantine record 1 cannot be accepted: {message}"), str(caught.value)


def test_verify_maps_the_accepted_version_with_its_coercion_and_no_other() -> None:
    values = stated(ITEMS, [("title", "Untitled"), ("category", "ideas")], [], NOW)
    row, digest = accepted_row(ITEMS, entry(HELD), values)
    accepted = {(ITEMS.table, "legacy-1"): Accepted(digest, values)}
    digests, invalid = file_digests(ITEMS, [HELD], accepted)
    assert invalid == []
    assert digests == {"legacy-1": content_digest(ITEMS.content(row[:-1]))}  # what PostgreSQL's row gives
    changed = {**HELD, "note": "changed at the source since"}
    assert file_digests(ITEMS, [changed], accepted) == ({}, ["legacy-1"])  # held again: a new version


def test_content_leaves_out_raw_values_their_column_no_longer_holds() -> None:
    """A service changed the column in pg-primary: the reverse path wrote the new value, and the raw
    one left in `extra` is no content (the file never gets it back), on both sides of verify."""
    record = {**HELD, "title": "Untitled", "category": "ideas", "status": "review"}
    written = ITEMS.to_row(record)[:-1]
    values = stated(ITEMS, [("title", "Untitled"), ("category", "ideas")], [], NOW)
    row, _ = accepted_row(ITEMS, entry(HELD), values)
    stale = dict(zip(ITEMS.columns, row, strict=True))
    stale["status"] = "review"
    assert stale["extra"] != written[ITEMS.columns.index("extra")]
    assert ITEMS.content(tuple(stale.values())[:-1]) == written
    legacy = {**HELD, "title": "t", "category": "ideas", "createdBy": 42}
    kept = ITEMS.to_row(legacy)[:-1]
    assert ITEMS.content(kept)[ITEMS.columns.index("extra")] == {"createdBy": 42, "note": "an unknown key"}
