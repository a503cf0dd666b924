"""One collection of one file version: each record's key and canonical hash, the record on demand.

The diff needs every record's key and `record_hash`, but the record itself only where PostgreSQL
must change. For a sliced file (`lowdb_slices`) a collection keeps no copy of its records' bytes:
the file's bytes and each record's offset in its array's body are enough to cut a record out when
it is wanted, and the keys and hashes of unchanged records are carried over from the previous
version, so a single-record edit parses and hashes one record and the first read of a 277 MB file
holds the file once, not twice.

A record Node reads but orjson or PostgreSQL cannot (`syncd.poison`) stands in the collection as a
`Poison` under its key, hashed by its quarantine form: the diff quarantines it, the rest flows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress, count, islice
from operator import ne
from typing import Any

import orjson

from syncd.lowdb.slices import SEPARATOR, parse_slice
from syncd.poison import diagnose, too_large
from syncd.tables import TableSpec, canonical, record_hash

KEEP_PARSED = 1_000
"""Parsed records a read keeps for the diff. A parsed record takes several times its JSON's bytes:
a first read of a 500k-record file keeping them all would hold gigabytes until the diff, which
re-parses the slice of any record beyond these instead."""
_SEP = len(SEPARATOR)
SPLIT_BYTES = 1 << 20
"""A first read cuts its records out of this many bytes of the file at a time (more would leave
the allocator holding as many freed slices for good: +30 MB of RSS at 8 MiB)."""


class Records:
    """Keys and hashes of a collection's records in file order; `record(i)` loads one record.

    A sliced collection (`data` set) finds record i's bytes at `data[body + starts[i] :
    body + starts[i + 1] - len(SEPARATOR)]`: `starts` has one offset more than there are records,
    as if another record followed the last. The reader patches a sliced collection in place.
    """

    __slots__ = ("_parsed", "body", "data", "digests", "generation", "keys", "last_patch", "spec", "starts", "synced")

    def __init__(
        self,
        spec: TableSpec,
        keys: list[str | None],
        digests: list[bytes],
        parsed: Mapping[int, Any] | Sequence[Any],
        data: bytes | None = None,
        body: int = 0,
        starts: list[int] | None = None,
    ) -> None:
        self.spec = spec
        self.keys = keys
        self.digests = digests
        self._parsed = parsed
        self.data = data
        """The file's bytes (sliced collections only), compared with the next version's."""
        self.body = body
        """Offset in `data` of the first record's first byte."""
        self.starts = starts if starts is not None else [0]
        self.generation = 0
        """How many times `patch` changed these records."""
        self.last_patch: tuple[int, int, list[str | None]] = (0, 0, [])
        """The last patch: first and stop positions of the new records, and the keys they replaced."""
        self.synced: int | None = None
        """The generation PostgreSQL is known to hold exactly (every key with its hash, nothing else)."""

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def sliced(self) -> bool:
        """True when records are cut from the file's bytes (False: a whole parse's list)."""
        return self.data is not None

    @property
    def end(self) -> int:
        """Offset in `data` just past the last record's bytes."""
        return self.body + self.starts[-1] - _SEP

    def piece(self, i: int) -> bytes:
        """The bytes of record i (sliced collections only)."""
        assert self.data is not None
        return self.data[self.body + self.starts[i] : self.body + self.starts[i + 1] - _SEP]

    def pieces(self, first: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The bytes of records `first..stop-1`, cut one at a time."""
        return map(self.piece, range(first, len(self.starts) - 1 if stop is None else stop))

    def record(self, i: int) -> Any:
        """The i-th record (or its `Poison`): parsed already, or parsed now from its slice."""
        if self.data is None:
            return self._parsed[i]
        parsed = self._parsed
        assert isinstance(parsed, dict)  # a concrete check: this runs once per record mapped
        if i in parsed:
            return parsed[i]
        piece = self.piece(i)
        if len(piece) <= self.spec.max_record_bytes:
            # Keyed and hashed when read: only the record itself is wanted now.
            try:
                return parse_slice(piece)
            except orjson.JSONDecodeError:
                pass
        keyed = _keyed(self.spec, piece)
        assert keyed is not None, "a slice that was read once reads again"
        return keyed[0]

    def settle(self) -> None:
        """Forget the records parsed during this read: the next read keeps only keys and hashes."""
        if self.data is not None:
            self._parsed = {}

    def patch(self, data: bytes, first: int, last: int, pieces: list[bytes], delta: int) -> bool:
        """Records `first..last` replaced by `pieces` in the new version `data`, in place.

        `delta` is how much longer the new version is. False, with nothing changed, when a piece
        is not a JSON record (the caller reads the file some other way).
        """
        fresh: dict[int, Any] = {}
        keys: list[str | None] = []
        digests: list[bytes] = []
        for i, piece in enumerate(pieces, start=first):
            keyed = _keyed(self.spec, piece)
            if keyed is None:
                return False
            fresh[i], key, digest = keyed
            keys.append(key)
            digests.append(digest)
        self.last_patch = (first, first + len(pieces), self.keys[first : last + 1])
        self.generation += 1
        self.keys[first : last + 1] = keys
        self.digests[first : last + 1] = digests
        # The new pieces' offsets, then every later record's, moved by `delta` (map: in C).
        placed = accumulate((len(p) + _SEP for p in pieces[:-1]), initial=self.starts[first])
        self.starts[first + 1 :] = [*list(placed)[1:], *map(delta.__add__, self.starts[last + 1 :])]
        self.data, self._parsed = data, fresh
        return True

    def since_synced(self) -> tuple[int, int, list[str | None]] | None:
        """What changed since the generation PostgreSQL holds exactly: the last patch's span and the
        keys it replaced (an empty span when nothing did); None when that is not known."""
        if self.synced is None or self.generation - self.synced not in (0, 1):
            return None
        return self.last_patch if self.generation != self.synced else (0, 0, [])

    @classmethod
    def parsed(cls, spec: TableSpec, records: Sequence[Any]) -> Records:
        """A fully parsed collection (the fallback path): every record keyed and hashed."""
        keys = [spec.record_key(r) for r in records]
        digests: list[bytes] = []
        kept: list[Any] = []
        for key, record in zip(keys, records, strict=True):
            data = canonical(record)
            poison = too_large(len(data), spec.max_record_bytes, data[:65536].decode("utf-8", "replace"), key)
            digests.append(record_hash(poison.raw) if poison is not None else record_hash(record))
            kept.append(record if poison is None else poison)
        return cls(spec, keys, digests, kept)

    @classmethod
    def from_body(cls, spec: TableSpec, data: bytes, body: int, end: int, previous: Records | None) -> Records | None:
        """The records between `body` and `end` (joined by SEPARATOR), keyed and hashed.

        Records byte-identical to one of `previous` reuse its key and hash; None if one is not JSON.
        """
        if previous is None or not previous.sliced or not previous.keys:
            return cls._unseen(spec, data, body, end)
        starts = _starts(data, body, end)
        new = cls(spec, [], [], {}, data, body, starts)
        prior = previous
        head, tail = _common_ends(prior, new)
        cut = _Cut(spec, prior.keys[:head], prior.digests[:head])
        # Records that moved (an insert or delete before them) are found by their bytes.
        kept = range(head, len(prior) - tail)
        reuse = dict(zip(prior.pieces(kept.start, kept.stop), kept, strict=True))
        for i in range(head, len(starts) - 1 - tail):
            piece = new.piece(i)
            at = reuse.get(piece)
            if at is not None:
                cut.keys.append(prior.keys[at])
                cut.digests.append(prior.digests[at])
            elif not cut.add(i, piece):
                return None
        cut.keys += prior.keys[len(prior) - tail :]
        cut.digests += prior.digests[len(prior) - tail :]
        new.keys, new.digests, new._parsed = cut.keys, cut.digests, cut.fresh
        return new

    @classmethod
    def _unseen(cls, spec: TableSpec, data: bytes, body: int, end: int) -> Records | None:
        """`from_body` with no previous records to reuse (a first read): every record keyed and hashed."""
        starts: list[int] = [0]
        cut = _Cut(spec, [], [])
        for pieces in _split(data, body, end):
            for i, piece in enumerate(pieces, start=len(cut.keys)):
                if not cut.add(i, piece):
                    return None
            starts += islice(accumulate(map(_SEP.__add__, map(len, pieces)), initial=starts[-1]), 1, None)
        return cls(spec, cut.keys, cut.digests, cut.fresh, data, body, starts)


@dataclass(slots=True)
class _Cut:
    """The keys and hashes of a collection being cut record by record, and its first parsed records."""

    spec: TableSpec
    keys: list[str | None]
    digests: list[bytes]
    fresh: dict[int, Any] = field(default_factory=dict)

    def add(self, i: int, piece: bytes) -> bool:
        """Key and hash record `i` (its slice `piece`); False when it does not parse on its own."""
        keyed = _keyed(self.spec, piece)
        if keyed is None:
            return False
        record, key, digest = keyed
        if len(self.fresh) < KEEP_PARSED:
            self.fresh[i] = record
        self.keys.append(key)
        self.digests.append(digest)
        return True


def _split(data: bytes, body: int, end: int) -> Iterator[list[bytes]]:
    """The record slices between `body` and `end`, SPLIT_BYTES of the file at a time.

    `bytes.split` finds the separators and cuts the slices in C; a whole body at once would hold a
    second copy of the file.
    """
    at = body
    while True:
        # The chunk ends where a separator starts: every separator before it lies wholly inside.
        stop = end if end - at <= SPLIT_BYTES else data.find(SEPARATOR, at + SPLIT_BYTES, end)
        stop = end if stop < 0 else stop
        yield data[at:stop].split(SEPARATOR)
        if stop == end:
            return
        at = stop + _SEP


def _starts(data: bytes, body: int, end: int) -> list[int]:
    """Each record's offset from `body`, plus one past the last as if another followed."""
    starts = [0]
    find, at = data.find, body
    while (at := find(SEPARATOR, at, end)) >= 0:
        at += _SEP
        starts.append(at - body)
    starts.append(end - body + _SEP)
    return starts


def _keyed(spec: TableSpec, piece: bytes) -> tuple[Any, str | None, bytes] | None:
    """A slice's record (or Poison) with its key and hash; None when Node could not read it either."""
    if len(piece) <= spec.max_record_bytes:
        try:
            record = parse_slice(piece)
        except orjson.JSONDecodeError:
            pass
        else:
            return record, spec.record_key(record), record_hash(record)
    poison = diagnose(piece, spec.key_field, spec.max_record_bytes)
    if poison is None:
        return None
    return poison, poison.key, record_hash(poison.raw)


def _common_ends(old: Records, new: Records) -> tuple[int, int]:
    """How many leading and trailing records `old` and `new` share byte for byte (not overlapping)."""
    # map/compress keep the comparisons in C; the pieces are cut as they are compared.
    shortest = min(len(old.starts), len(new.starts)) - 1
    head = next(compress(count(), map(ne, old.pieces(), new.pieces())), shortest)
    rest = shortest - head
    backwards = (range(len(r.starts) - 2, -1, -1) for r in (old, new))
    tail = next(compress(count(), map(ne, map(old.piece, next(backwards)), map(new.piece, next(backwards)))), rest)
    return head, min(tail, rest)
