"""Reading successive versions of one LowDB file, parsing only the records that changed.

A `VersionReader` remembers the previous version: its bytes, its top-level document and each
collection's records (`lowdb_records`: offsets, keys and hashes). A new version is compared with the
previous one byte for byte; when the difference lies inside one collection's records, only the
records it touches are re-cut and parsed, in place (an edit, an append, a delete of a 100k-record
file costs a few records, not a pass over every record). Otherwise the file is sliced again, reusing
unchanged records, and when it is not in lowdb's 2-space layout, or any record or the skeleton does
not parse, it is parsed whole (`parse_version`) exactly as `read_file` would, and nothing is
remembered.

The file's SHA-256 (the checkpoint's `sha`) is resumed from the bytes the two versions share: the
hash state is kept every HASH_STEP bytes, so an edit hashes from the step before it onwards.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import UnreadableFile
from syncd.lowdb.diff import FileVersion, gc_paused, parse_version, position, read_bytes, read_file
from syncd.lowdb.records import Records
from syncd.lowdb.slices import SEPARATOR, changed_window, slice_file, split_records
from syncd.tables import TableSpec

# hashlib releases the GIL on large inputs: the file's content hash runs beside the slicing.
_HASHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lowdb-sha")
HASH_IN_THREAD_BYTES = 1 << 20
"""Smaller files are hashed inline: the hand-off to a thread would cost more than the hash."""
HASH_STEP = 1 << 16
"""The SHA-256 state is kept at every multiple of this many bytes, to resume from on the next version."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """The previous sliced version, what the next one is compared with."""

    data: bytes
    document: dict[str, Any]
    records: dict[str, Records]


class _Hash:
    """SHA-256 of successive versions of one file, resumed from the last state both share."""

    def __init__(self) -> None:
        self._states: list[Any] = []
        """The hash state after each whole HASH_STEP of the last version hashed."""

    def digest(self, data: bytes, same: int) -> str:
        """The hex SHA-256 of `data`, whose first `same` bytes equal the last version's."""
        kept = min(same // HASH_STEP, len(self._states))
        del self._states[kept:]
        state = self._states[-1].copy() if kept else hashlib.sha256()
        view = memoryview(data)
        for at in range(kept * HASH_STEP, len(data) - len(data) % HASH_STEP, HASH_STEP):
            state.update(view[at : at + HASH_STEP])
            self._states.append(state.copy())
        state.update(view[len(data) - len(data) % HASH_STEP :])
        return str(state.hexdigest())


class VersionReader:
    """Reads one file's versions; keeps the last sliced version to diff the next one against."""

    def __init__(self, specs: Sequence[TableSpec]) -> None:
        self.specs = {s.collection: s for s in specs}
        self._seen: _Seen | None = None
        self._hash = _Hash()
        self._kept = b""
        """The bytes of `_seen` (empty without one): what the next version is compared with."""
        self.size = 0
        """Bytes of the last version read (0 before the first)."""

    def read(self, path: Path) -> FileVersion:
        """The current version; raises UnreadableFile (or OSError) like `read_file`."""
        data, stat = read_bytes(path)
        self.size = len(data)
        # Where the bytes differ from the last version kept: the hash resumes there, the patch cuts there.
        window = changed_window(self._kept, data)
        sha = self._start_hash(data, len(data) if window is None else window[0])
        with gc_paused():
            seen = self._patched(data, window) or self._sliced(data)
        digest = sha.result()
        self._seen = seen
        self._kept = seen.data if seen is not None else b""  # a whole parse keeps no bytes
        if seen is None:
            return parse_version(path, data, stat, list(self.specs), digest)
        return FileVersion(position(data, stat, digest), seen.document, stat.st_mtime, seen.records)

    def _start_hash(self, data: bytes, same: int) -> Future[str]:
        """The content hash, in a thread beside the slicing when the file is large."""
        if len(data) < HASH_IN_THREAD_BYTES:
            done: Future[str] = Future()
            done.set_result(self._hash.digest(data, same))
            return done
        return _HASHER.submit(self._hash.digest, data, same)

    def _patched(self, data: bytes, window: tuple[int, int] | None) -> _Seen | None:
        """The previous version with the records in `window` re-cut; None if not that simple."""
        seen = self._seen
        if seen is None:
            return None
        if window is None:
            _settle(seen.records)
            return seen  # the same bytes: the new copy is dropped
        start, end = window
        # Only the last collection opening at or before the window can hold it.
        body, collection = max(((r.body, c) for c, r in seen.records.items() if r.body <= start), default=(-1, ""))
        if body < 0:
            return None
        records = seen.records[collection]
        if end > records.end:
            return None
        # Whole records around the window: their boundaries lie in the bytes both versions share.
        starts = records.starts
        first = bisect_right(starts, start - body) - 1
        last = bisect_left(starts, end - body + len(SEPARATOR), 1) - 1
        delta = len(data) - len(seen.data)
        pieces = split_records(data[body + starts[first] : body + starts[last + 1] - len(SEPARATOR) + delta])
        if not records.patch(data, first, last, pieces, delta):
            return None
        for other in seen.records.values():
            other.settle()
            other.data = data
            if other.body > body:
                other.body += delta
        return _Seen(data, seen.document, seen.records)

    def _sliced(self, data: bytes) -> _Seen | None:
        """The file cut into records, reusing the previous version's unchanged records."""
        sliced = slice_file(data, self.specs.keys())
        if sliced is None:
            return None
        previous = self._seen.records if self._seen is not None else {}
        records: dict[str, Records] = {}
        for collection, (body, end) in sliced.bodies.items():
            found = Records.from_body(self.specs[collection], data, body, end, previous.get(collection))
            if found is None:
                return None
            records[collection] = found
        return _Seen(data, sliced.document, records)


def read_version(path: Path, specs: Sequence[TableSpec]) -> FileVersion:
    """The file parsed whole or, when orjson refuses it, per record with its poison set apart.

    For the one-off readers (verify): the whole parse is the fast path, and the per-record read
    finds which records a file nobody could parse whole holds that Node still reads.
    """
    try:
        return read_file(path, [s.collection for s in specs])
    except UnreadableFile:
        return VersionReader(specs).read(path)


def _settle(records: dict[str, Records]) -> None:
    for r in records.values():
        r.settle()
