"""The diff reports the records it has examined to a first load's counters while it runs."""

from __future__ import annotations

from pathlib import Path

from syncd.lowdb.diff import diff, read_file
from syncd.model import LoadProgress
from syncd.quarantine import Held
from syncd.tables import specs_for_layout
from tests.lowdb_files import item, write_v7

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
