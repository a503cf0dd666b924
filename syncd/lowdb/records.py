"""One collection of one file version: each record's key and canonical hash, the record on demand.

The diff needs every record's key and `record_hash`, but the record itself only where PostgreSQL
must change. For a sliced file (`lowdb_slices`) the keys and hashes of unchanged slices are carried
over from the previous version, so a single-record edit parses and hashes one record.

A record Node reads but orjson or PostgreSQL cannot (`syncd.poison`) stands in the collection as a
`Poison` under its key, hashed by its quarantine form: the diff quarantines it, the rest flows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate, compress, count, repeat
from operator import add, ne
from typing import Any

import orjson

from syncd.lowdb.slices import SEPARATOR, parse_slice
from syncd.poison import diagnose, too_large
from syncd.tables import TableSpec, canonical, record_hash

KEEP_PARSED = 1_000
"""Parsed records a read keeps for the diff. A parsed record takes several times its JSON's bytes:
a first read of a 500k-record file keeping them all would hold gigabytes until the diff, which
re-parses the slice of any record beyond these instead."""


class Records:
    """Keys and hashes of a collection's records in file order; `record(i)` loads one record."""

    __slots__ = ("_parsed", "digests", "keys", "slices", "spec")

    def __init__(
        self,
        spec: TableSpec,
        keys: list[str | None],
        digests: list[bytes],
        parsed: Mapping[int, Any] | Sequence[Any],
        slices: list[bytes] | None = None,
    ) -> None:
        self.spec = spec
        self.keys = keys
        self.digests = digests
        self._parsed = parsed
        self.slices = slices
        """The raw slices (sliced files only), compared with the next version's."""

    def __len__(self) -> int:
        return len(self.keys)

    def record(self, i: int) -> Any:
        """The i-th record (or its `Poison`): parsed already, or parsed now from its slice."""
        if self.slices is None:
            return self._parsed[i]
        parsed = self._parsed
        assert isinstance(parsed, Mapping)
        if i in parsed:
            return parsed[i]
        piece = self.slices[i]
        if len(piece) <= self.spec.max_record_bytes:
            # Keyed and hashed when read: only the record itself is wanted now.
            try:
                return parse_slice(piece)
            except orjson.JSONDecodeError:
                pass
        keyed = _keyed(self.spec, piece)
        assert keyed is not None, "a slice that was read once reads again"
        return keyed[0]

    def settled(self) -> Records:
        """The same records without the ones parsed during this read: what the next read reuses."""
        return Records(self.spec, self.keys, self.digests, {}, self.slices) if self.slices is not None else self

    def starts(self, body: int) -> list[int]:
        """File offset of each slice's first byte, plus one past the last (as if another followed)."""
        assert self.slices is not None
        return list(accumulate(map(add, map(len, self.slices), repeat(len(SEPARATOR))), initial=body))

    def replaced(self, spec: TableSpec, first: int, last: int, pieces: list[bytes]) -> Records | None:
        """Slices `first..last` replaced by `pieces`, each parsed; None if one is not a JSON record."""
        assert self.slices is not None
        fresh: dict[int, Any] = {}
        keys: list[str | None] = []
        digests: list[bytes] = []
        for i, piece in enumerate(pieces, start=first):
            keyed = _keyed(spec, piece)
            if keyed is None:
                return None
            fresh[i], key, digest = keyed
            keys.append(key)
            digests.append(digest)
        after = slice(last + 1, None)
        return Records(
            spec,
            self.keys[:first] + keys + self.keys[after],
            self.digests[:first] + digests + self.digests[after],
            fresh,
            self.slices[:first] + pieces + self.slices[after],
        )

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
    def from_slices(cls, spec: TableSpec, slices: list[bytes], previous: Records | None) -> Records | None:
        """Key and hash each slice, reusing `previous` for byte-identical ones; None if one is not JSON."""
        prior = previous if previous is not None and previous.slices is not None else cls(spec, [], [], {}, [])
        old = prior.slices or []
        head, tail = _common_ends(old, slices)
        keys, digests = prior.keys[:head], prior.digests[:head]
        fresh: dict[int, Any] = {}
        reuse = _index(old[head : len(old) - tail], head)
        for i in range(head, len(slices) - tail):
            at = reuse.get(slices[i])
            if at is not None:
                keys.append(prior.keys[at])
                digests.append(prior.digests[at])
                continue
            keyed = _keyed(spec, slices[i])
            if keyed is None:
                return None
            record, key, digest = keyed
            if len(fresh) < KEEP_PARSED:
                fresh[i] = record
            keys.append(key)
            digests.append(digest)
        keys += prior.keys[len(old) - tail :]
        digests += prior.digests[len(old) - tail :]
        return cls(spec, keys, digests, fresh, slices)


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


def _common_ends(old: list[bytes], new: list[bytes]) -> tuple[int, int]:
    """How many leading and trailing slices `old` and `new` share (not overlapping)."""
    # map/compress keep the byte comparisons in C: a memcmp per slice, no Python loop.
    shortest = min(len(old), len(new))
    head = next(compress(count(), map(ne, old, new)), shortest)
    rest = shortest - head
    tail = next(compress(count(), map(ne, reversed(old), reversed(new))), rest)
    return head, min(tail, rest)


def _index(slices: list[bytes], offset: int) -> dict[bytes, int]:
    """Slice → its position in the previous version, for records that moved (insert, delete)."""
    return {s: offset + i for i, s in enumerate(slices)}
