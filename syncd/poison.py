"""Poison input: records the file's owner (Node) can read but PostgreSQL or syncd cannot store.

Node's `JSON.parse` reads invalid UTF-8 as U+FFFD, `1e400` as Infinity, a lone `\\udXXX` escape as
a lone surrogate and nesting thousands of levels deep; orjson refuses all four, and PostgreSQL
refuses a NUL character in text and in jsonb (22021, 22P05). Such a record is one record's problem,
never the file's: it becomes a `Poison` (its reason, its text as the file holds it), is quarantined
under its key, and the rest of the file flows. A record Node could not read either (a syntax error)
is not poison: the file is unreadable, as it is for Node, and retried.

`problem` finds what PostgreSQL cannot hold in a parsed value; `storable` turns any quarantined
record into something `syncd.quarantine.raw` (jsonb) can hold.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

MAX_DEPTH = 250
"""Levels of objects and arrays a record may nest, itself counting as one. orjson writes 254 at
most; the reverse path writes a record back two levels deep inside the file's document."""
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""Default size limit of one record's text: far under jsonb's 255 MB, and a record travels several
times per batch (the row, its outbox before/after, its audit row)."""
TEXT_PREVIEW = 64 * 1024
"""Characters of a poison record's text kept in quarantine."""
_WRAP = (b"[[{", b"\n    }]]")
"""A slice parsed where it sits in the file: two arrays deep (see `syncd.lowdb.slices`)."""


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that cannot be stored as it is: why, and its text as the file holds it."""

    reason: str
    text: str
    key: str | None = None
    """Its id, when the record could still be read for one."""

    @property
    def raw(self) -> dict[str, Any]:
        """What `syncd.quarantine.raw` holds for it (its hash identifies a keyless one)."""
        if len(self.text) > TEXT_PREVIEW:
            return {"error": self.reason, "text": self.text[:TEXT_PREVIEW], "truncated": len(self.text)}
        return {"error": self.reason, "text": self.text}


def diagnose(piece: bytes, key_field: str, max_bytes: int = MAX_RECORD_BYTES) -> Poison | None:
    """Why orjson refused (or would refuse) one record slice; None when Node could not read it either."""
    if len(piece) > max_bytes:
        size = f"record is {_size(len(piece))}, over the {_size(max_bytes)} limit"
        return Poison(size, _text(piece), _key_line(_text(piece[:4096]), key_field))
    text = piece.decode("utf-8", "replace")
    reason = _reason(piece, text)
    if reason is None:
        return None
    record = _node_parse(text)
    if record is _UNREADABLE:
        return None
    key = _key(record, key_field) if record is not _TOO_DEEP else _key_line(text, key_field)
    if key is not None and "\ufffd" in key and reason.startswith("invalid UTF-8"):
        key = None  # the id's own bytes are broken: which record this is, nobody knows
    return Poison(reason, _text(piece), key)


def too_large(size: int, max_bytes: int, text: str, key: str | None) -> Poison | None:
    """A record over the size limit (its canonical JSON is `size` bytes)."""
    if size <= max_bytes:
        return None
    return Poison(f"record is {_size(size)}, over the {_size(max_bytes)} limit", text[:TEXT_PREVIEW], key)


def unwritable(piece: bytes, record: Any, key: str | None) -> Poison | None:
    """A record (the slice `piece`) orjson read but cannot write back two arrays deep, where it sits
    in the file: nested past the 254 levels orjson writes. None when it can."""
    try:
        orjson.dumps([[record]])
    except orjson.JSONEncodeError:
        return Poison(f"record is nested deeper than {MAX_DEPTH} levels", _text(piece), key)
    return None


def problem(value: Any, where: str) -> str | None:
    """What PostgreSQL (or syncd) cannot store in `value`: a NUL, a lone surrogate, too deep nesting,
    an integer beyond 64 bits."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            found = _bad_text(item, path)
            if found is not None:
                return found
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return f"{where} is nested deeper than {MAX_DEPTH} levels (at {path})"
            if isinstance(item, dict):
                for k, v in item.items():
                    found = _bad_text(k, f"{path} key {k[:40]!r}")
                    if found is not None:
                        return found
                    stack.append((v, f"{path}.{k}", depth + 1))
            else:
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, float) and item in (_INF, -_INF):
            return f"{path} is a number out of range (Node reads Infinity, JSON.stringify writes null)"
        elif isinstance(item, int) and not JSON_INTS[0] <= item <= JSON_INTS[1]:
            return f"{path} is an integer of {item.bit_length()} bits, beyond the 64 that orjson writes to jsonb"
    return None


def storable(record: Any) -> Any:
    """`record` itself when jsonb can hold it, else a `Poison.raw` with the reason and its text."""
    if isinstance(record, Poison):
        return record.raw
    reason = problem(record, "record")
    if reason is None:
        return record
    try:
        text = json.dumps(record, ensure_ascii=True)
    except (RecursionError, ValueError):
        text = ""
    return Poison(reason, text).raw


def unstorable_text(value: str, where: str) -> str | None:
    """Why a text column cannot hold `value` (a NUL, a lone surrogate); None if it can."""
    return _bad_text(value, where)


_INF = float("inf")
JSON_INTS = (-(2**63), 2**64 - 1)
"""The integers orjson writes (every jsonb value syncd stores goes through it); orjson reads no
other, a Python caller (a property test, a stated value) can hand one over."""
_UNREADABLE = object()
_TOO_DEEP = object()
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _reason(piece: bytes, text: str) -> str | None:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start} of the record (Node reads U+FFFD there)"
    try:
        orjson.loads(_WRAP[0] + piece + _WRAP[1])
    except orjson.JSONDecodeError as exc:
        at = max(0, exc.pos - len(_WRAP[0]))
        if "infinity" in exc.msg:
            return (
                f"number {_infinite_near(piece, at)} is out of range (Node reads ±Infinity, JSON.stringify writes null)"
            )
        if "surrogate" in exc.msg:
            return f"lone UTF-16 surrogate escape at character {at} of the record: PostgreSQL cannot store it"
        if "depth" in exc.msg or "recursion" in exc.msg:
            return f"record is nested deeper than {MAX_DEPTH} levels"
        return None
    return None


def _infinite_near(piece: bytes, at: int) -> str:
    """The literal orjson refused as infinite: the one nearest the position it reported."""
    found = [m for m in _NUMBER.finditer(piece) if math.isinf(float(m.group()))]
    if not found:
        return "?"
    return min(found, key=lambda m: abs(m.start() - at)).group().decode()


def _node_parse(text: str) -> Any:
    """The record as Node's JSON.parse reads it (no NaN/Infinity literals), or a marker."""
    try:
        return json.loads(_WRAP[0].decode() + text + _WRAP[1].decode(), parse_constant=_refuse)[0][0]
    except RecursionError:
        return _TOO_DEEP
    except ValueError:
        return _UNREADABLE


def _refuse(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _key(record: Any, key_field: str) -> str | None:
    if not isinstance(record, dict):
        return None
    value = record.get(key_field)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value and _bad_text(value, "") is None:
        return value
    return None


def _key_line(text: str, key_field: str) -> str | None:
    # In lowdb's layout a record's own fields, and only they, sit on lines indented six spaces.
    found = re.search(r"\n      " + re.escape(json.dumps(key_field)) + r': ("(?:[^"\\]|\\.)*"|-?\d+),?\n', text)
    if found is None:
        return None
    try:
        return _key({key_field: json.loads(found.group(1))}, key_field)
    except ValueError:
        return None


def nul_in(where: str) -> str:
    """The reason for a NUL character found at `where`."""
    return f"{where} holds a NUL character (\\u0000): PostgreSQL text and jsonb cannot store it"


def _bad_text(value: str, where: str) -> str | None:
    if "\x00" in value:
        return nul_in(where)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} holds a lone UTF-16 surrogate: PostgreSQL cannot store it"
    return None


def _text(piece: bytes) -> str:
    """The slice as readable, storable text: U+FFFD for bad bytes, no raw NUL."""
    head = piece[: TEXT_PREVIEW * 4]
    return "{" + head.decode("utf-8", "replace").replace("\x00", "\\u0000") + "\n    }"


def _size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
