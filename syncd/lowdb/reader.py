"""Reading successive versions of one LowDB file, parsing only the records that changed.

A `VersionReader` remembers the previous version: its bytes, its top-level document and each
collection's record slices (`lowdb_slices`) with their keys and hashes. A new version is compared
with the previous one byte for byte; when the difference lies inside one collection's records, only
the records it touches are re-cut and parsed (an edit, an append, a delete of a 100k-record file
costs a few records). Otherwise the file is sliced again, reusing unchanged slices, and when it is
not in lowdb's 2-space layout, or any slice or the skeleton does not parse, it is parsed whole
(`parse_version`) exactly as `read_file` would, and nothing is remembered.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import UnreadableFile
from syncd.lowdb.diff import FileVersion, content_hash, gc_paused, parse_version, position, read_bytes, read_file
from syncd.lowdb.records import Records
from syncd.lowdb.slices import SEPARATOR, changed_window, slice_file, split_records
from syncd.tables import TableSpec

# hashlib releases the GIL on large inputs: the file's content hash runs beside the slicing.
_HASHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lowdb-sha")


@dataclass(frozen=True, slots=True)
class _Seen:
    """The previous sliced version, what the next one is compared with."""

    data: bytes
    document: dict[str, Any]
    records: dict[str, Records]
    bodies: dict[str, int]
    """Per sliced collection: the file offset of its first record."""


class VersionReader:
    """Reads one file's versions; keeps the last sliced version to diff the next one against."""

    def __init__(self, specs: Sequence[TableSpec]) -> None:
        self.specs = {s.collection: s for s in specs}
        self._seen: _Seen | None = None

    def read(self, path: Path) -> FileVersion:
        """The current version; raises UnreadableFile (or OSError) like `read_file`."""
        data, stat = read_bytes(path)
        sha = _HASHER.submit(content_hash, data)
        with gc_paused():
            seen = self._patched(data) or self._sliced(data)
        self._seen = seen
        if seen is None:
            return parse_version(path, data, stat, list(self.specs), sha.result())
        return FileVersion(position(data, stat, sha.result()), seen.document, stat.st_mtime, seen.records)

    def _patched(self, data: bytes) -> _Seen | None:
        """The previous version with the records the bytes changed in re-cut; None if not that simple."""
        seen = self._seen
        if seen is None:
            return None
        window = changed_window(seen.data, data)
        if window is None:
            return _Seen(data, seen.document, _settled(seen.records), seen.bodies)
        start, end = window
        # Only the last collection opening at or before the window can hold it.
        body, collection = max(((b, c) for c, b in seen.bodies.items() if b <= start), default=(-1, ""))
        if body < 0:
            return None
        records = seen.records[collection]
        starts = records.starts(body)
        if end > starts[-1] - len(SEPARATOR):
            return None
        # Whole records around the window: their boundaries lie in the bytes both versions share.
        first = bisect_right(starts, start) - 1
        last = bisect_left(starts, end + len(SEPARATOR), 1) - 1
        delta = len(data) - len(seen.data)
        pieces = split_records(data[starts[first] : starts[last + 1] - len(SEPARATOR) + delta])
        patched = records.replaced(self.specs[collection], first, last, pieces)
        if patched is None:
            return None
        shifted = {c: b + delta if b > body else b for c, b in seen.bodies.items()}
        return _Seen(data, seen.document, {**_settled(seen.records), collection: patched}, shifted)

    def _sliced(self, data: bytes) -> _Seen | None:
        """The file cut into records, reusing the previous version's unchanged slices."""
        sliced = slice_file(data, self.specs.keys())
        if sliced is None:
            return None
        previous = self._seen.records if self._seen is not None else {}
        records: dict[str, Records] = {}
        for collection, slices in sliced.slices.items():
            found = Records.from_slices(self.specs[collection], slices, previous.get(collection))
            if found is None:
                return None
            records[collection] = found
        return _Seen(data, sliced.document, records, sliced.bodies)


def read_version(path: Path, specs: Sequence[TableSpec]) -> FileVersion:
    """The file parsed whole or, when orjson refuses it, per record with its poison set apart.

    For the one-off readers (verify): the whole parse is the fast path, and the per-record read
    finds which records a file nobody could parse whole holds that Node still reads.
    """
    try:
        return read_file(path, [s.collection for s in specs])
    except UnreadableFile:
        return VersionReader(specs).read(path)


def _settled(records: dict[str, Records]) -> dict[str, Records]:
    return {c: r.settled() for c, r in records.items()}
