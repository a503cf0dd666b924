"""Cutting a LowDB file into per-record byte slices, so only changed records need parsing.

lowdb writes `JSON.stringify(data, null, 2)`: every collection is a top-level key whose array holds
one object per record, each opening on a line `    {` and closing on a line `    }`. The bytes of a
record therefore lie between separators `\\n    },\\n    {`, and a record that did not change keeps
exactly the same bytes from one version to the next.

Exactness does not rest on the layout being as expected. The result is only used when

* the skeleton (the file with each sliced array replaced by a placeholder string carrying a random
  nonce) parses, is an object, and holds each placeholder exactly as the value of its key, and
* the caller parses every slice it has not seen before on its own (`parse_slice`), unchanged slices
  being byte-identical to slices that parsed before.

The JSON grammar then makes the file equal to the skeleton with each placeholder replaced by the
list of its slices' values: what a full `orjson.loads` would return. Anything else (minified JSON,
another indent, a truncated or hand-edited file) yields None and the caller parses the whole file.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

KEY_LINE = b'\n  "'
"""Start of a top-level key's line (depth 1)."""
ARRAY_OPEN = b": ["
ARRAY_CLOSE = b"\n  ]"
FIRST = b"\n    {"
LAST = b"\n    }"
SEPARATOR = b"\n    },\n    {"
"""Between two records of one array: the first's closing line, then the next's opening line."""
_NONCE = secrets.token_hex(16)
"""Makes placeholders unguessable to a file's writer; drawn once (urandom costs ms per call here)."""


@dataclass(frozen=True, slots=True)
class Sliced:
    """A file cut into its top-level document and the raw record slices of its collections."""

    document: dict[str, Any]
    """The top-level object without the sliced collections (counters, small or odd collections)."""
    bodies: dict[str, tuple[int, int]]
    """Per sliced collection: the offsets in the file of its first record's first byte and just
    past its last record's last byte (records, between `{` and the closing `\\n    }`, are joined
    by SEPARATOR)."""
    order: tuple[str, ...] = ()
    """The top-level keys in the file's order, sliced collections included (a rewrite keeps it)."""


@dataclass(frozen=True, slots=True)
class _Region:
    """One sliced array: its key and the byte range from `[` to `]` inclusive."""

    key: str
    start: int
    end: int


def slice_file(data: bytes, collections: Collection[str]) -> Sliced | None:
    """Slice the arrays of `collections` out of `data`; None when the file is not in lowdb's layout."""
    regions = _regions(data, collections)
    if not regions:
        return None
    placeholders = [f"syncd-slice:{_NONCE}:{i}" for i in range(len(regions))]
    try:
        document = orjson.loads(_skeleton(data, regions, placeholders))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    if any(document.get(r.key) != p for r, p in zip(regions, placeholders, strict=True)):
        return None
    order = tuple(document)
    for r in regions:
        del document[r.key]
    bodies = {r.key: (_body_start(r), r.end - len(ARRAY_CLOSE) - len(LAST)) for r in regions}
    return Sliced(document, bodies, order)


def parse_slice(piece: bytes) -> Any:
    """The record of one slice; raises orjson.JSONDecodeError when the slice is not one value.

    The record is parsed two arrays deep, where it sits in the file, so nesting limits apply
    exactly as they would to a full parse.
    """
    return orjson.loads(b"[[{" + piece + b"\n    }]]")[0][0]


def _regions(data: bytes, collections: Collection[str]) -> list[_Region]:
    """Top-level arrays of `collections` laid out one record per `    {` … `    }` block."""
    regions: list[_Region] = []
    pos = 0
    while (line := data.find(KEY_LINE, pos)) >= 0:
        eol = data.find(b"\n", line + 1)
        if eol < 0:
            break
        pos = eol
        key = _array_key(data[line + 3 : eol])
        if key is None or key not in collections:
            continue
        close = data.find(ARRAY_CLOSE, eol)
        if close < 0:
            break
        pos = close + len(ARRAY_CLOSE)
        # `[]` is written inline and never reaches here; anything not shaped like records stays
        # in the skeleton and is parsed with it.
        if close - eol >= len(FIRST) + len(LAST) and data.startswith(FIRST, eol) and data.endswith(LAST, 0, close):
            regions.append(_Region(key, eol - 1, pos))
    return regions


def _array_key(header: bytes) -> str | None:
    """`"name": [` → name; None for any other top-level line."""
    if not header.endswith(ARRAY_OPEN) or not header.startswith(b'"'):
        return None
    try:
        key = orjson.loads(header[: -len(ARRAY_OPEN)])
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None


def _skeleton(data: bytes, regions: list[_Region], placeholders: list[str]) -> bytes:
    parts: list[bytes] = []
    pos = 0
    for region, placeholder in zip(regions, placeholders, strict=True):
        parts += (data[pos : region.start], orjson.dumps(placeholder))
        pos = region.end
    parts.append(data[pos:])
    return b"".join(parts)


def split_records(body: bytes) -> list[bytes]:
    """The record slices of an array body (records joined by SEPARATOR)."""
    return body.split(SEPARATOR)


def _body_start(region: _Region) -> int:
    # Between `[` + FIRST and LAST + ARRAY_CLOSE lie the records joined by SEPARATOR.
    return region.start + 1 + len(FIRST)


def changed_window(old: bytes, new: bytes) -> tuple[int, int] | None:
    """Where `new` differs from `old`: (first differing offset, end of the difference in `old`).

    None when they are equal. The common suffix is measured first and the prefix may not overlap
    it, so an appended record's window ends inside the last old record, not past the array.
    """
    if old == new:
        return None
    suffix = _common_suffix(old, new)
    prefix = _common_prefix(old, new, min(len(old), len(new)) - suffix)
    return prefix, len(old) - suffix


def _common_prefix(a: bytes, b: bytes, limit: int) -> int:
    # Binary search on memcmp'd halves: each step compares only the untested half (≤ 2n bytes).
    view = memoryview(a)
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if b.startswith(view[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: bytes, b: bytes) -> int:
    view = memoryview(a)
    na, nb = len(a), len(b)
    lo, hi = 0, min(na, nb)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if b.startswith(view[na - mid : na - lo], nb - mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
