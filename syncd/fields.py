"""One LowDB key and the typed column it lands in: conversion, documented coercion, and the inverse.

A value the column holds exactly (its inverse gives back the same JSON value) is stored as it is.
A value the column cannot hold exactly — `createdBy` written as a number, `metadata` as a string, a
timestamp without a zone or with microseconds, an enum value outside the CHECK list — is what older
upstream versions wrote and the service still serves, so it is not held: the column takes the
coercion below and the raw value is kept in `extra` under its own key, which the reverse path puts
back while the column still holds that coercion. Only a required value that cannot be derived
(no title, a category that is not a slug) raises, and the record is held.

| kind      | exact                 | coercion (raw value kept in `extra`)                          |
|-----------|-----------------------|---------------------------------------------------------------|
| text      | a string              | a number/boolean/object → its JSON text                       |
| timestamp | ISO 8601 `….sssZ`     | no zone → read in the file's `timezone`; other precision →    |
|           |                       | rounded to ms; a number → epoch ms (as `new Date(n)`); only   |
|           |                       | instants within years 1..9999 in UTC (Python's datetime)      |
| tags      | a list of strings     | a string → `[it]`; other elements → their JSON text           |
| object    | an object             | a string holding a JSON object → that object                  |
| int       | an integer            | an integral number or numeric string → that integer           |
| bool      | true/false            | `"true"`/`"false"`, 0/1                                       |
| any       | a failed rule (enum, bounds, pattern, unparsable) → the column default, else NULL; |
|           | a required field without a default → held                                          |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

import orjson

from syncd.poison import nul_in, problem

Kind = Literal["text", "id", "ref", "timestamp", "tags", "object", "int", "bool"]
Emit = Literal["always", "if_set"]
"""How the inverse writes a field the record did not already have: always (null included), or only
when set (not null, not `{}`, not equal to the field it is derived from)."""


@dataclass(frozen=True, slots=True)
class Field:
    """One LowDB key and the column it lands in, with the column's rules."""

    source: str
    column: str
    kind: Kind = "text"
    required: bool = False
    default: Any = None
    """Stored when the key is absent or null (NOT NULL columns with a DEFAULT)."""
    choices: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None
    not_blank: bool = False
    bounds: tuple[int, int] | None = None
    emit: Emit = "always"
    derived_from: str | None = None
    """Another field's source key whose value this one takes when absent (display_name ← name)."""

    def convert(self, value: Any, zone: tzinfo = UTC) -> Any:
        """The column value for `value`; raises ValueError with a reason naming the field."""
        if value is None:
            if self.required and self.default is None:
                raise ValueError(f"{self.source} is required")
            return _copy_default(self.default)
        converted = _CONVERTERS[self.kind](self, value, zone)
        self._check(converted)
        return converted

    def coerce(self, value: Any, zone: tzinfo = UTC) -> Any:
        """The documented coercion of a value `convert` rejects; ValueError when there is none.

        A value PostgreSQL cannot store at all (`Unstorable`: a NUL character, nesting past the
        limit, an integer beyond 64 bits) has no coercion: the record is poison and is held.
        """
        if value is None:
            return self.convert(value, zone)
        _storable(problem(value, self.source))  # kept raw in `extra`: jsonb must hold it as it is
        try:
            coerced = _COERCIONS[self.kind](self, value, zone)
            if self.kind == "timestamp":
                self._check(coerced)
                return coerced
            return self.convert(coerced, zone)  # the column's rules and storability, once more
        except Unstorable:
            raise
        except ValueError:
            if self.required and self.default is None:
                raise
            return _copy_default(self.default)

    def _check(self, value: Any) -> None:
        if value is None:
            return
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.source} must be one of {sorted(self.choices)}, got {value!r}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise ValueError(f"{self.source} must match {self.pattern.pattern}, got {value!r}")
        if self.not_blank and not value.strip():
            raise ValueError(f"{self.source} must not be blank")
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
            raise ValueError(f"{self.source} must be within {self.bounds[0]}..{self.bounds[1]}, got {value}")

    def to_source(self, value: Any, *, int_ids: bool) -> Any:
        """The LowDB value of column value `value` (inverse of `convert`)."""
        if value is None:
            return None
        if self.kind == "timestamp":
            return format_timestamp(value)
        if self.kind in ("id", "ref") and int_ids and isinstance(value, str) and value.isdigit():
            return int(value)
        if self.kind == "tags":
            return list(value)
        return value


INEXACT: Any = object()
"""What an `exact` reader returns for a value it does not take as it is: the full mapping decides."""
ABSENT: Any = object()
"""The raw value of a key the record does not have (an `exact` reader tells it apart from null)."""


@dataclass(frozen=True, slots=True)
class Exact:
    """How a field's column takes a raw value as it is; every reader returns INEXACT when it does not.

    Built once per field of a spec: a first load maps every record through these, and the common
    record (strings, a list of tags, an ISO timestamp, keys absent) then costs a few type checks per
    field instead of `convert`, `_check` and the inverse's comparison. What they return is what
    `TableSpec`'s full mapping of the field returns (a unit test compares the two).
    """

    absent: Callable[[], Any]
    """The column value when the record lacks the key."""
    null: Any
    """The column value when the record holds null."""
    present: Callable[[Any], Any]
    """The column value of any other raw value."""


def exact(f: Field, *, int_ids: bool) -> Exact:
    """The exact readers of `f` (in a spec whose ids are integers when `int_ids`)."""
    if f.derived_from is not None:  # takes another field's value: the full mapping has it
        return Exact(lambda: INEXACT, INEXACT, lambda raw: INEXACT)
    null = None if f.default is None and not f.required else INEXACT
    return Exact(_absent_reader(f), null, _present_reader(f, _checker(f), int_ids=int_ids))


def _checker(f: Field) -> Callable[[Any], bool] | None:
    """Whether a converted value passes the column's rules (None: the field has none)."""
    if f.choices is None and f.pattern is None and not f.not_blank and f.bounds is None:
        return None
    choices = f.choices
    if choices is not None and f.kind == "text" and f.pattern is None and not f.not_blank and f.bounds is None:
        return choices.__contains__  # a text value is hashable: one set lookup

    def passes(value: Any) -> bool:
        try:
            f._check(value)
        except ValueError:
            return False
        return True

    return passes


def _absent_reader(f: Field) -> Callable[[], Any]:
    if f.required and f.default is None:
        return lambda: INEXACT  # the record is held: the full mapping says why
    default = f.default
    if isinstance(default, dict | list):
        return type(default)  # a fresh one per row, as `_copy_default` gives
    return lambda: default


def _present_reader(f: Field, checked: Callable[[Any], bool] | None, *, int_ids: bool) -> Callable[[Any], Any]:
    if f.kind in ("id", "ref") and int_ids:
        # Documentation's counters: a non-negative integer reads back from its decimal text.
        def numeric(raw: Any) -> Any:
            if type(raw) is not int or raw < 0:
                return INEXACT
            text = str(raw)
            return text if checked is None or checked(text) else INEXACT

        return numeric
    if f.kind in ("text", "id", "ref"):
        empty_ok = f.kind == "text"

        def text(raw: Any) -> Any:
            if type(raw) is not str or "\x00" in raw or not (raw or empty_ok):
                return INEXACT
            return raw if checked is None or checked(raw) else INEXACT

        return text
    if f.kind == "timestamp":
        return lambda raw: _exact_timestamp(raw, checked)
    if f.kind == "tags":
        return lambda raw: _exact_tags(raw, checked)
    if f.kind == "object":
        return lambda raw: _exact_object(f.source, raw, checked)
    return lambda raw: _exact_scalar(f, raw)


def _exact_timestamp(raw: Any, checked: Callable[[Any], bool] | None) -> Any:
    # Upstream's own `Date.toISOString()` form only: any other is coerced or compared by the full mapping.
    if type(raw) is not str or not (raw.isascii() and is_iso_millis(raw)) or "\x00" in raw:
        return INEXACT
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return INEXACT
    if parsed.tzinfo is None:
        return INEXACT
    value = to_millis(parsed)
    return value if checked is None or checked(value) else INEXACT


def _exact_tags(raw: Any, checked: Callable[[Any], bool] | None) -> Any:
    if type(raw) is not list or not all(type(t) is str and "\x00" not in t for t in raw):
        return INEXACT
    value = list(raw)
    return value if checked is None or checked(value) else INEXACT


def _exact_object(source: str, raw: Any, checked: Callable[[Any], bool] | None) -> Any:
    if type(raw) is not dict or problem({source: raw}, "record") is not None:
        return INEXACT
    return raw if checked is None or checked(raw) else INEXACT


def _exact_scalar(f: Field, raw: Any) -> Any:
    # int and bool: the column holds the value itself or the full mapping decides.
    try:
        value = f.convert(raw)
    except ValueError:
        return INEXACT
    return value if value is raw else INEXACT


class Unstorable(ValueError):
    """A value PostgreSQL cannot hold in any column (see `syncd.poison`): never coerced."""


def _storable(reason: str | None) -> None:
    if reason is not None:
        raise Unstorable(reason)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: `1`, `1.0` and `true` are three different values."""
    if type(a) is not type(b):
        return False
    return orjson.dumps(a) == orjson.dumps(b) if isinstance(a, dict | list) else bool(a == b)


def _copy_default(default: Any) -> Any:
    # Mutable defaults ({} / []) are copied so rows never share one object.
    return type(default)() if isinstance(default, dict | list) else default


def _text(f: Field, value: Any, zone: tzinfo) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{f.source} must be a string, got {type(value).__name__}")
    # orjson never reads a lone surrogate (syncd.poison diagnoses those): a NUL is all to look for.
    if "\x00" in value:
        raise Unstorable(nul_in(f.source))
    return value


def _id(f: Field, value: Any, zone: tzinfo) -> str:
    # ids are opaque text; integer ids (Documentation's counters) become their decimal text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _text(f, value, zone)
    if not text:
        raise ValueError(f"{f.source} must not be empty")
    return text


def _timestamp(f: Field, value: Any, zone: tzinfo) -> datetime:
    text = _text(f, value, zone)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{f.source} is not an ISO 8601 timestamp: {text!r}") from None
    # JavaScript reads a date-time without a zone as local time: the service's zone.
    return _instant(f, parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone), text)


EPOCH_MS = (-62135596800000, 253402300799999)
"""Epoch milliseconds of 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the instants Python's
datetime (asyncpg's, the reverse path's) holds in UTC."""


def _instant(f: Field, value: datetime, given: object) -> datetime:
    """`value` rounded to milliseconds, when that instant lies within years 1..9999 in UTC; a date
    near either end with an offset, or rounded past the last millisecond, overflows datetime."""
    try:
        rounded = to_millis(value)
        rounded.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{f.source} is outside years 1..9999 in UTC: {given!r}") from None
    return rounded


def to_millis(value: datetime) -> datetime:
    """Rounded to milliseconds half up, as PostgreSQL stores it in a timestamptz(3) column."""
    if value.microsecond % 1000 == 0:
        return value
    return value.replace(microsecond=0) + timedelta(milliseconds=(value.microsecond + 500) // 1000)


def is_iso_millis(text: str) -> bool:
    """`Date.toISOString()`'s exact form (`2025-10-23T22:46:19.745Z`), given that it parsed.

    Such a timestamp is what `format_timestamp` writes back, byte for byte: nothing to compare.
    """
    return (
        len(text) == 24
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
    )


def _tags(f: Field, value: Any, zone: tzinfo) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{f.source} must be a list of strings")
    for i, tag in enumerate(value):
        if "\x00" in tag:
            raise Unstorable(nul_in(f"{f.source}[{i}]"))
    return list(value)


def _object(f: Field, value: Any, zone: tzinfo) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{f.source} must be an object, got {type(value).__name__}")
    # The record counts as one level above the object.
    _storable(problem({f.source: value}, "record"))
    return value


def _int(f: Field, value: Any, zone: tzinfo) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{f.source} must be an integer, got {value!r}")
    if f.bounds is None and not INT4[0] <= value <= INT4[1]:
        raise ValueError(f"{f.source} must be within {INT4[0]}..{INT4[1]} (an integer column), got {value}")
    return value


INT4 = (-(2**31), 2**31 - 1)
"""An `integer` column's range, for int fields without bounds of their own."""


def _bool(f: Field, value: Any, zone: tzinfo) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{f.source} must be true or false, got {value!r}")
    return value


_CONVERTERS: dict[str, Any] = {
    "text": _text,
    "id": _id,
    "ref": _id,
    "timestamp": _timestamp,
    "tags": _tags,
    "object": _object,
    "int": _int,
    "bool": _bool,
}


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _coerce_text(f: Field, value: Any, zone: tzinfo) -> str:
    return _json_text(value)


def _coerce_ref(f: Field, value: Any, zone: tzinfo) -> str:
    return _id(f, _json_text(value), zone)


def _coerce_timestamp(f: Field, value: Any, zone: tzinfo) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # What rounds to a millisecond within the years; also keeps `value / 1000` from overflowing.
        if not EPOCH_MS[0] <= value < EPOCH_MS[1] + 0.5:
            raise ValueError(f"{f.source} is {value!r} ms since the epoch, outside years 1..9999")
        return _instant(f, datetime.fromtimestamp(value / 1000, UTC), value)
    if isinstance(value, str):
        return _timestamp(f, value, zone)  # no coercion of a text `convert` refused: its reason
    raise ValueError(f"{f.source} is not an ISO 8601 timestamp: {value!r}")


def _coerce_tags(f: Field, value: Any, zone: tzinfo) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [_json_text(t) for t in value]
    raise ValueError(f"{f.source} must be a list of strings")


def _coerce_object(f: Field, value: Any, zone: tzinfo) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(f"{f.source} must be an object, got {type(value).__name__}")


def _coerce_int(f: Field, value: Any, zone: tzinfo) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    raise ValueError(f"{f.source} must be an integer, got {value!r}")


def _coerce_bool(f: Field, value: Any, zone: tzinfo) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{f.source} must be true or false, got {value!r}")


_COERCIONS: dict[str, Any] = {
    "text": _coerce_text,
    "id": _coerce_ref,
    "ref": _coerce_ref,
    "timestamp": _coerce_timestamp,
    "tags": _coerce_tags,
    "object": _coerce_object,
    "int": _coerce_int,
    "bool": _coerce_bool,
}


def format_timestamp(value: datetime) -> str:
    """`Date.toISOString()`'s form: UTC, milliseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
