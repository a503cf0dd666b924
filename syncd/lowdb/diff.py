"""Reading a LowDB file safely and diffing it by id against what PostgreSQL holds.

Pure and synchronous: the LowDB source runs its reads and `diff` in a worker thread so a large
file never blocks the event loop. `read_file` parses the whole file; `VersionReader`
(`lowdb_reader`) slices it and parses only changed records, falling back to `parse_version`.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import compress, count
from operator import ne
from pathlib import Path
from typing import Any

import orjson

from syncd.errors import InvalidRecord, UnreadableFile
from syncd.lowdb.records import Records
from syncd.model import LoadProgress, QuarantinedRecord, Row, TableChanges
from syncd.poison import Poison, storable
from syncd.quarantine import Coercions, Held, stated_for
from syncd.tables import TableSpec, record_hash

Applied = dict[str, dict[str, bytes]]
"""Per collection: record key → row_hash of the version PostgreSQL holds."""
Blocked = set[tuple[str, str]] | frozenset[tuple[str, str]]
"""(quarantine table, key) pairs whose changes wait."""
DUPLICATE_ID = ": duplicate id "
"""What the reason of a record held for its duplicated id says (`quarantine accept` refuses those)."""
Refused = Mapping[tuple[str, str], tuple[bytes, str]]
"""(collection, key) → (row_hash, reason) of record versions PostgreSQL refused (`RejectedRow`)."""


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One good read of the file: its identity, content hash and parsed document."""

    position: dict[str, Any]
    document: dict[str, Any]
    mtime: float
    records: dict[str, Records] = field(default_factory=dict)
    """Collections already keyed and hashed (a sliced read); these are absent from `document`."""

    def collection(self, spec: TableSpec) -> Records | Any:
        """The spec's collection: keyed Records, or the raw parsed value (a list, or anything)."""
        found = self.records.get(spec.collection)
        return found if found is not None else self.document.get(spec.collection, [])


@dataclass(slots=True)
class TableDiff:
    """What changed in one collection."""

    spec: TableSpec
    upserts: list[Row] = field(default_factory=list)
    hashes: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    known: int = 0
    """Keys PostgreSQL held before this diff (base of the mass-delete ratio)."""
    records: Records | None = None
    todo: list[int] = field(default_factory=list)
    """Positions in `records` of changed records not yet mapped to rows (`Diff.take` maps them)."""
    taken: int = 0
    """How many of `todo` are mapped already."""
    exact: bool = False
    """Applying every part, deletes included, leaves PostgreSQL holding exactly `records`."""
    generation: int = 0
    """`records.generation` when compared."""

    def changes(self, *, with_deletes: bool = True) -> TableChanges:
        """The sink's view of this diff."""
        deletes = [self.spec.key_of(k) for k in self.deletes] if with_deletes else []
        return TableChanges(self.spec.table, self.spec.columns, self.spec.key, self.upserts, deletes)


@dataclass(slots=True)
class Diff:
    """A file version against PostgreSQL: per-table changes plus records to quarantine."""

    tables: list[TableDiff]
    quarantine: list[QuarantinedRecord] = field(default_factory=list)
    blocked: set[tuple[str, str]] = field(default_factory=set)
    """Keys this diff quarantined (blocked from now on)."""
    refused: Refused = field(default_factory=dict)
    accepted: Coercions = field(default_factory=dict)
    """Accepted record versions: their stated coercion applies while the file holds them."""
    progress: LoadProgress | None = None
    """A first load's counters: `read` follows the records examined (mapped, for changed ones)."""

    @property
    def empty(self) -> bool:
        """True when nothing would change in PostgreSQL."""
        return not self.quarantine and not self.pending and not any(t.upserts or t.deletes for t in self.tables)

    @property
    def pending(self) -> int:
        """Changed records not yet mapped to rows."""
        return sum(len(t.todo) - t.taken for t in self.tables)

    def take(self, limit: int | None = None) -> Diff:
        """The next part of this diff: up to `limit` records mapped to rows (all when None).

        The quarantine met so far goes with it; the part that leaves nothing pending also carries
        the deletes. A first load of a big file is applied part by part this way, so only one
        part's rows are ever in memory.
        """
        tables = [TableDiff(t.spec, known=t.known) for t in self.tables]
        part = Diff(tables, self.quarantine, self.blocked, self.refused, self.accepted, self.progress)
        self.quarantine = []
        room = self.pending if limit is None else limit
        with gc_paused():  # a part's rows are acyclic; collections would only traverse them
            for t, out in zip(self.tables, tables, strict=True):
                stop = min(len(t.todo), t.taken + room)
                if t.records is not None and not _map(t.records, t.todo[t.taken : stop], out, part):
                    t.exact = False
                room -= stop - t.taken
                t.taken = stop
        if not self.pending:
            for t, out in zip(self.tables, tables, strict=True):
                out.deletes, out.records, out.exact, out.generation = t.deletes, t.records, t.exact, t.generation
        return part


def _map(records: Records, todo: Sequence[int], out: TableDiff, part: Diff) -> bool:
    """The records at positions `todo` upserted (or quarantined) into `out`; False if any was quarantined."""
    before = len(out.upserts)
    progress = part.progress
    keys, digests, record = records.keys, records.digests, records.record
    for i in todo:
        key = keys[i]
        assert key is not None, "only keyed records are left to map"
        _upsert(out, key, record(i), digests[i], i, part)
        if progress is not None:
            progress.read += 1
    return len(out.upserts) - before == len(todo)


def quarantine_table(spec: TableSpec) -> str:
    """The `table_name` a spec's quarantined records carry (documents: one per collection)."""
    return f"{spec.table}:{spec.collection}" if spec.document else spec.table


class _GcPause:
    """The collector off while any holder is inside; on again when the last one leaves.

    Holders overlap: a first load keeps it off across awaits while other streams read in worker
    threads. Each saving and restoring `gc.isenabled()` on its own would let the first to leave
    turn it on under the others (or the last restore a state an earlier one had changed).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        # A parsed document is acyclic; a collection triggered by its million young objects would
        # traverse them for nothing and double the read time of a large file.
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._resume:
                    gc.enable()


gc_paused = _GcPause()


def read_file(path: Path, collections: Sequence[str]) -> FileVersion:
    """Read and parse the file; UnreadableFile when empty, truncated, not JSON or not this layout."""
    data, stat = read_bytes(path)
    return parse_version(path, data, stat, collections)


def read_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat of the very file object they were read from."""
    with path.open("rb") as f:
        stat = os.fstat(f.fileno())
        data = f.read()
    return data, stat


def parse_version(
    path: Path, data: bytes, stat: os.stat_result, collections: Sequence[str], sha: str | None = None
) -> FileVersion:
    """Parse `data` whole; UnreadableFile when empty, truncated, not JSON or not this layout."""
    if not data.strip():
        raise UnreadableFile(path, "empty")
    try:
        with gc_paused():
            document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UnreadableFile(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UnreadableFile(path, f"top level is {type(document).__name__}, not an object")
    # lowdb@1 writes `{}` before its defaults when it creates a file: a document with none of the
    # layout's collections is a transient state, never "every record deleted".
    if not any(c in document for c in collections):
        raise UnreadableFile(path, f"none of the collections {list(collections)} present")
    return FileVersion(position(data, stat, sha), document, stat.st_mtime)


def position(data: bytes, stat: os.stat_result, sha: str | None = None) -> dict[str, Any]:
    """The checkpoint position of a version: file identity and content hash (`sha` if known)."""
    return {
        "dev": stat.st_dev,
        "inode": stat.st_ino,
        "size": len(data),
        "mtime": stat.st_mtime,
        "sha": sha if sha is not None else content_hash(data),
    }


def content_hash(data: bytes) -> str:
    """The `sha` of a position: SHA-256 of the whole file, hex (cutover compares it too)."""
    # SHA-256 rather than blake2b: CPUs' SHA extensions make it twice as fast on a 40 MB file.
    return sha256(data).hexdigest()


def diff(
    version: FileVersion,
    specs: Sequence[TableSpec],
    applied: Applied,
    held: Held,
    refused: Refused | None = None,
    progress: LoadProgress | None = None,
) -> Diff:
    """Compare every collection of `version` with `applied`, skipping keys `held` blocks.

    A record version in `refused` is quarantined with PostgreSQL's reason instead of upserted; the
    version `held` says was accepted takes its stated coercion; `progress.read` follows the records
    examined (a first load reports it while it runs)."""
    with gc_paused():
        return compare(version, specs, applied, held, refused, progress).take()


def compare(
    version: FileVersion,
    specs: Sequence[TableSpec],
    applied: Applied,
    held: Held,
    refused: Refused | None = None,
    progress: LoadProgress | None = None,
) -> Diff:
    """`diff` with its records not yet mapped to rows: keys and hashes compared, deletes known.

    `Diff.take` maps them, all at once or part by part; `progress.read` counts the records
    examined, a changed one once it is mapped."""
    result = Diff([], refused=refused or {}, accepted=held.accepted, progress=progress)
    examined = 0
    with gc_paused():
        for spec in specs:
            value = version.collection(spec)
            result.tables.append(_diff_table(spec, value, applied, held, result))
            examined += record_count(value)
    if progress is not None:
        progress.read = examined - result.pending
    return result


def record_count(collection: Any) -> int:
    """Records of one collection: keyed Records or a parsed list (anything else holds none)."""
    return len(collection) if isinstance(collection, Records | list) else 0


def _diff_table(spec: TableSpec, value: Any, applied: Applied, held: Held, result: Diff) -> TableDiff:
    table = quarantine_table(spec)
    old = applied.get(spec.collection, {})
    out = TableDiff(spec, known=len(old))
    if isinstance(value, list):
        value = Records.parsed(spec, value)
    elif not isinstance(value, Records):
        # Not a list: quarantine the whole value and change nothing, deletes included.
        _quarantine_keyless(result, held, table, value, f"collection {spec.collection!r} is not a list")
        return out
    out.records, out.generation = value, value.generation
    blocked = held.keys | result.blocked
    since = value.since_synced()
    if since is not None and _diff_since(out, value, since, old, table, blocked):
        return out
    present = set(value.keys)
    if len(present) == len(value) and None not in present:
        _diff_unique(out, value, present, old, table, blocked, result)
    else:
        _diff_grouped(out, value, old, held, table, result)
    return out


def _diff_since(
    out: TableDiff,
    records: Records,
    since: tuple[int, int, list[str | None]],
    old: Mapping[str, bytes],
    table: str,
    blocked: Blocked,
) -> bool:
    """The diff of a patch of records PostgreSQL held exactly: only the patched records are looked at.

    `old` then holds exactly the previous version's keys, so a new key is unique unless it is in
    `old` without being one the patch replaced. False (the caller diffs every record) when the
    patch brought a keyless or repeated id, or touched a blocked key.
    """
    first, stop, replaced = since
    keys = [k for k in records.keys[first:stop] if k is not None]
    fresh, gone = set(keys), {k for k in replaced if k is not None}
    if len(fresh) != stop - first or len(gone) != len(replaced) or not gone <= old.keys():
        return False
    if any(k in old and k not in gone for k in fresh) or any((table, k) in blocked for k in fresh | gone):
        return False
    digests = records.digests
    out.todo = [i for i, key in enumerate(keys, start=first) if old.get(key) != digests[i]]
    out.deletes = sorted(gone - fresh)
    out.exact = True
    return True


def _diff_unique(
    out: TableDiff,
    records: Records,
    present: set[str | None],
    old: Mapping[str, bytes],
    table: str,
    blocked: Blocked,
    result: Diff,
) -> None:
    """The usual case, every record keyed once: only records whose hash differs are looked at."""
    keys = records.keys
    # The comparison runs in C (map/compress): a single-record edit of a 100k file costs a few ms.
    changed = compress(count(), map(ne, map(old.get, keys), records.digests))  # type: ignore[arg-type]
    added = 0
    skipped = False
    for i in changed:
        key = keys[i]
        added += key not in old
        if (table, key) in blocked:
            skipped = True
        else:
            out.todo.append(i)
    out.exact = not skipped
    # Every key of `old` still present (the usual edit) is known without a 100k-key set difference.
    if len(present) - added == len(old):
        return
    gone = old.keys() - present
    out.deletes = _deletes(gone, table, blocked)
    out.exact = out.exact and len(out.deletes) == len(gone)


def _diff_grouped(
    out: TableDiff, records: Records, old: Mapping[str, bytes], held: Held, table: str, result: Diff
) -> None:
    """Keyless records and duplicated ids: quarantined, never guessed; the rest diffed as usual."""
    by_key, duplicates, unreadable = _group(out.spec, records, held, table, result)
    blocked = held.keys | result.blocked
    for key, i in by_key.items():
        if (table, key) not in blocked and old.get(key) != records.digests[i]:
            out.todo.append(i)
    for key, versions in duplicates.items():
        if (table, key) not in blocked:
            for i in versions:
                reason = f"{out.spec.collection}[{i}]{DUPLICATE_ID}{key!r}: {len(versions)} records carry it"
                _quarantine(result, table, key, records.record(i), reason)
    # A record read without its id may be any of the missing keys: none of them is deleted.
    if not unreadable:
        out.deletes = _deletes(old.keys() - by_key.keys() - duplicates.keys(), table, blocked)


def _deletes(gone: set[str], table: str, blocked: Blocked) -> list[str]:
    """Keys no longer in the file, but not those a quarantine blocks (their deletion waits too)."""
    return sorted(k for k in gone if (table, k) not in blocked)


def _upsert(out: TableDiff, key: str, record: Any, digest: bytes, at: int, result: Diff) -> None:
    """Record `at` of its collection mapped to a row of `out`, or quarantined with the reason."""
    spec = out.spec
    table = quarantine_table(spec)
    if isinstance(record, Poison):
        _quarantine(result, table, key, record, f"{spec.collection}[{at}]: {record.reason}")
        return
    refused = result.refused.get((spec.collection, key)) if result.refused else None
    if refused is not None and refused[0] == digest:
        _quarantine(result, table, key, record, f"{spec.collection}[{at}]: PostgreSQL refused it: {refused[1]}")
        return
    stated = stated_for(result.accepted, table, key, digest) if result.accepted else None
    try:
        out.upserts.append(spec.to_row(record, digest, stated, key=key))
    except InvalidRecord as exc:
        _quarantine(result, table, key, record, f"{spec.collection}[{at}]: {exc.reason}")
        return
    out.hashes[key] = digest


def _group(
    spec: TableSpec, records: Records, held: Held, table: str, result: Diff
) -> tuple[dict[str, int], dict[str, list[int]], bool]:
    """Record positions by key; keyless ones are quarantined, duplicated keys set apart.

    The flag says a keyless record was poison: it may carry the id of a record the file still has.
    """
    by_key: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    unreadable = False
    for i, key in enumerate(records.keys):
        if key is None:
            record = records.record(i)
            unreadable |= isinstance(record, Poison)
            reason = record.reason if isinstance(record, Poison) else spec.keyless_reason(record)
            _quarantine_keyless(result, held, table, record, f"{spec.collection}[{i}]: {reason}", records.digests[i])
        elif key in duplicates:
            duplicates[key].append(i)
        elif key in by_key:
            duplicates[key] = [by_key.pop(key), i]
        else:
            by_key[key] = i
    return by_key, duplicates, unreadable


def _quarantine(result: Diff, table: str, key: str, record: Any, reason: str) -> None:
    result.quarantine.append(QuarantinedRecord(table, key, storable(record), reason))
    result.blocked.add((table, key))


def _quarantine_keyless(
    result: Diff, held: Held, table: str, record: Any, reason: str, digest: bytes | None = None
) -> None:
    # Without a key nothing can be blocked: the record is quarantined once, recognised by the hash
    # of what quarantine holds (a Poison's digest already is that hash).
    raw = storable(record)
    if digest is None or (raw is not record and not isinstance(record, Poison)):
        digest = record_hash(raw)
    if (table, digest) not in held.keyless:
        result.quarantine.append(QuarantinedRecord(table, None, raw, reason))


def apply_to(applied: Applied, tables: Sequence[TableDiff], *, with_deletes: bool) -> None:
    """Advance `applied` past a committed diff (and mark what PostgreSQL now holds exactly)."""
    for t in tables:
        known = applied.setdefault(t.spec.collection, {})
        known.update(t.hashes)
        if with_deletes:
            for key in t.deletes:
                known.pop(key, None)
        if t.records is not None:  # the part that ends a diff
            t.records.synced = t.generation if with_deletes and t.exact else None


def mass_deletes(tables: Sequence[TableDiff], ratio: float, minimum: int) -> Mapping[str, int]:
    """Tables whose deletes exceed both `ratio` of their rows and `minimum` rows."""
    return {
        t.spec.table: len(t.deletes) for t in tables if len(t.deletes) > minimum and len(t.deletes) > ratio * t.known
    }
