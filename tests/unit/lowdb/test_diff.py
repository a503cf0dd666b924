"""The LowDB diff: it reports the records it has examined to a first load's counters while it runs,
and the diff of a patched version (only the patched records looked at) equals the diff of every record.

For the latter, each step writes a file version the way lowdb does, diffs it with the long-lived
reader (which patches its records in place and, once PostgreSQL is known to hold a version exactly,
diffs only the patch), and with a fresh reader (which diffs every record) against the same applied
state; both must ask PostgreSQL for the same changes. The applied state then advances as a commit
would.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.lowdb.diff import Applied, Diff, apply_to, compare, diff, gc_paused, read_file
from syncd.lowdb.reader import VersionReader
from syncd.model import LoadProgress
from syncd.quarantine import Held
from syncd.tables import specs_for_layout
from tests.lowdb_files import Mutations, category, item, write_v7
from tests.unit.lowdb.test_reader import lowdb_bytes

SPECS = specs_for_layout("workspace")


class Recorded(LoadProgress):
    """Counters remembering every value `read` took (the diff sets it from its worker thread)."""

    def __init__(self) -> None:
        self.reads: list[int] = []
        super().__init__()

    def __setattr__(self, name: str, value: object) -> None:
        if name == "read" and isinstance(value, int):
            self.reads.append(value)
        super().__setattr__(name, value)


def test_read_follows_the_records_examined(tmp_path: Path) -> None:
    """A first load examines records in file order: read climbs one by one to every record."""
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item(f"i{n}") for n in range(5)], "categories": []})
    progress = Recorded()
    result = diff(read_file(path, [s.collection for s in SPECS]), SPECS, {}, Held(frozenset(), frozenset()), None,
                  progress)  # fmt: skip
    assert sum(len(t.upserts) for t in result.tables) == 5
    assert progress.reads == sorted(progress.reads)
    assert set(progress.reads) == {0, 1, 2, 3, 4, 5}  # 0: __init__, and the empty categories before items
    assert progress.read == 5


def test_an_unchanged_file_is_examined_at_once(tmp_path: Path) -> None:
    """Records PostgreSQL already holds are compared in C: read jumps to their number."""
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item(f"i{n}") for n in range(5)], "categories": []})
    version = read_file(path, [s.collection for s in SPECS])
    first = diff(version, SPECS, {}, Held(frozenset(), frozenset()))
    applied = {t.spec.collection: dict(t.hashes) for t in first.tables}
    progress = Recorded()
    again = diff(version, SPECS, applied, Held(frozenset(), frozenset()), None, progress)
    assert again.empty
    assert progress.read == 5
    assert 1 not in progress.reads


NOTHING_HELD = Held(frozenset(), frozenset())
# Valid records mostly (so PostgreSQL can hold a version exactly), ids from a small set (so some
# repeat), now and then one without a title (quarantined).
titles = st.one_of(st.text(max_size=6), st.just(""))
items = st.builds(item, st.integers(0, 40).map(lambda n: f"item-{n:03d}"), titles)
categories = st.builds(category, st.sampled_from(["dashboard", "feature", "ops"]), st.integers(1, 3))
state = st.fixed_dictionaries(
    {"items": st.lists(items, max_size=12), "categories": st.lists(categories, max_size=3, unique_by=lambda c: c["id"])}
)


MUTATIONS = Mutations(state, items, titles, operations=("edit", "edit", "append", "insert", "delete", "swap", "new"))
"""Edits twice as likely as the rest; a move (swap) changes no record, only where records are."""


def changes(result: Diff) -> dict[str, Any]:
    """What a diff asks of PostgreSQL, per table: upserted keys with hashes, deleted keys, quarantined keys."""
    return {
        t.spec.table: (dict(sorted(t.hashes.items())), sorted(t.deletes), len(t.upserts)) for t in result.tables
    } | {"quarantine": sorted((q.table, q.key or "", q.reason) for q in result.quarantine)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), state)
def test_a_patched_version_diffs_like_every_record(
    tmp_path: Path, data: st.DataObject, document: dict[str, Any]
) -> None:
    reader = VersionReader(SPECS)
    path = tmp_path / "library.json"
    applied: Applied = {}
    for _ in range(10):
        path.write_bytes(lowdb_bytes(document))
        patched = diff(reader.read(path), SPECS, applied, NOTHING_HELD)
        whole = diff(VersionReader(SPECS).read(path), SPECS, applied, NOTHING_HELD)
        assert changes(patched) == changes(whole)
        if data.draw(st.booleans()):  # committed (else: rejected, and the file is read again)
            apply_to(applied, patched.tables, with_deletes=True)
        document = MUTATIONS.mutated(data, document)


def test_a_big_diff_is_taken_in_parts_that_add_up(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    records = [item(f"item-{i:04d}") for i in range(250)]
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    plan = compare(VersionReader(SPECS).read(path), SPECS, {}, NOTHING_HELD)
    parts = []
    while plan.pending:
        parts.append(plan.take(100))
    assert [sum(len(t.upserts) for t in p.tables) for p in parts] == [100, 100, 50]
    assert [key for p in parts for t in p.tables for key in t.hashes] == [r["id"] for r in records]


def test_a_patch_bringing_an_id_the_file_has_elsewhere_quarantines_both(tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    records = [item(f"item-{i}") for i in range(5)]
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    reader, applied = VersionReader(SPECS), {}
    apply_to(applied, diff(reader.read(path), SPECS, applied, NOTHING_HELD).tables, with_deletes=True)
    records.insert(2, item("item-4", "a second item-4"))
    path.write_bytes(lowdb_bytes({"items": records, "categories": []}))
    result = diff(reader.read(path), SPECS, applied, NOTHING_HELD)
    assert [q.reason for q in result.quarantine] == [
        "items[2]: duplicate id 'item-4': 2 records carry it",
        "items[5]: duplicate id 'item-4': 2 records carry it",
    ]
    assert not any(t.upserts or t.deletes for t in result.tables)


def test_the_collector_stays_off_until_the_last_of_overlapping_pauses_ends() -> None:
    # A first load pauses it across awaits while another stream's read pauses it in a thread:
    # the first to leave must not turn it on under the other.
    assert gc.isenabled()
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_inside_code_that_disabled_the_collector_leaves_it_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
