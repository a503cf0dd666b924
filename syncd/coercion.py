"""A stated coercion: the values an operator gives a held record's fields to accept it.

`syncd quarantine accept ID --set FIELD=VALUE --coerce FIELD=RULE` resolves a record the stream
holds because a required field cannot be derived (no title, a category that is not a slug, no
parsable createdAt) or because PostgreSQL refused it. The stated values are checked here against
the field's column exactly (no automatic coercion on top of an operator's), then against the whole
record (`TableSpec.to_row` with them must succeed), before anything is recorded. The source file is
never edited: the stream applies the values to the held version, its own values kept in `extra`.

FIELD is the LowDB key (`title`, `createdAt`). VALUE is taken as written for text and timestamp
fields and as JSON for the others (`3`, `true`, `["a","b"]`, `{}`). RULE is one of `RULES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from syncd.cutover.foreign import REASON as FOREIGN_WRITE
from syncd.errors import BadCoercion, InvalidRecord, NotAcceptable
from syncd.fields import Field, format_timestamp
from syncd.lowdb.diff import DUPLICATE_ID
from syncd.model import Row
from syncd.quarantine import Entry
from syncd.tables import TableSpec, record_hash

RULES = {
    "default": "what the column takes when the key is absent (its default, else NULL)",
    "null": "NULL (refused for a field whose column is NOT NULL)",
    "now": "the time of the accept (timestamp fields)",
}
"""The named coercions of `--coerce FIELD=RULE`."""
VERBATIM_KINDS = frozenset({"text", "id", "ref", "timestamp"})
"""Kinds whose `--set` VALUE is the text as written; the others read it as JSON."""


def stated(
    spec: TableSpec, sets: Sequence[tuple[str, str]], rules: Sequence[tuple[str, str]], now: datetime
) -> dict[str, Any]:
    """Source key → value (as the file would hold it) of every `--set` and `--coerce`; BadCoercion
    names the first one that is unknown, repeated, or a value the column cannot hold."""
    values: dict[str, Any] = {}
    for option, name, given in [*(("--set", n, v) for n, v in sets), *(("--coerce", n, r) for n, r in rules)]:
        setting = f"{option} {name}={given}"
        f = _field(spec, name, setting)
        if name in values:
            raise BadCoercion(setting, f"{name} is stated twice")
        value = _parsed(f, given, setting) if option == "--set" else _rule(f, given, setting, now)
        try:
            column = f.convert(value, spec.zone)
        except ValueError as exc:
            raise BadCoercion(setting, f"its column cannot hold it: {exc}") from None
        values[name] = f.to_source(column, int_ids=spec.int_ids)
    return values


def _field(spec: TableSpec, name: str, setting: str) -> Field:
    f = spec.field_of(name)
    if f is None:
        known = ", ".join(sorted(x.source for x in spec.fields)) or "none: its records are stored whole"
        raise BadCoercion(setting, f"{spec.table} has no field {name!r} (fields: {known})")
    if name == spec.key_field:
        raise BadCoercion(setting, f"{name} is the record's key; a coercion cannot change it")
    return f


def _parsed(f: Field, given: str, setting: str) -> Any:
    if f.kind in VERBATIM_KINDS:
        return given
    try:
        return orjson.loads(given)
    except orjson.JSONDecodeError:
        raise BadCoercion(setting, f"{f.source} is a {f.kind} field: state its value as JSON") from None


def _rule(f: Field, rule: str, setting: str, now: datetime) -> Any:
    if rule not in RULES:
        raise BadCoercion(setting, f"no coercion {rule!r} (coercions: {', '.join(RULES)})")
    if rule == "now":
        if f.kind != "timestamp":
            raise BadCoercion(setting, f"{f.source} is a {f.kind} field, not a timestamp")
        return format_timestamp(now)
    if rule == "null" and (f.required or f.default is not None):
        raise BadCoercion(setting, f"the column of {f.source} is NOT NULL")
    return None


def check_acceptable(spec: TableSpec, entry: Entry) -> None:
    """Refuse (NotAcceptable) a held record that no coercion can resolve."""
    if entry.key is None:
        raise NotAcceptable(entry.id, "it has no usable id; give it one at the source and replay, or discard it")
    if DUPLICATE_ID in entry.reason:
        raise NotAcceptable(entry.id, "its id is duplicated in the file; remove one record at the source and replay")
    if entry.reason == FOREIGN_WRITE:
        raise NotAcceptable(
            entry.id, "it is a foreign write over PostgreSQL's state; make the change through the service or discard it"
        )
    if spec.record_key(entry.raw) != entry.key:
        raise NotAcceptable(
            entry.id, "only its text is kept (PostgreSQL cannot store it as it is); fix it at the source, or discard it"
        )


def accepted_row(spec: TableSpec, entry: Entry, values: dict[str, Any]) -> tuple[Row, bytes]:
    """The row the stream will write for `entry` with `values`, and the hash of the held version;
    BadCoercion when the record would still be held with them."""
    digest = record_hash(entry.raw)
    try:
        return spec.to_row(entry.raw, digest, values), digest
    except InvalidRecord as exc:
        hint = ", ".join(f"--set {n}=…" for n in _missing(spec, entry.raw, values)) or "--set FIELD=VALUE"
        raise BadCoercion(f"record {entry.id}", f"it would still be held: {exc.reason} (state it: {hint})") from None


def _missing(spec: TableSpec, record: Any, values: dict[str, Any]) -> list[str]:
    """Required fields neither the record nor `values` gives a value the column takes."""
    missing = []
    for f in spec.fields:
        if f.source in values or f.source == spec.key_field or not f.required:
            continue
        if not _derivable(f, record.get(f.source), spec):
            missing.append(f.source)
    return missing


def _derivable(f: Field, value: Any, spec: TableSpec) -> bool:
    """Whether the column takes `value`, exactly or by its documented coercion."""
    for attempt in (f.convert, f.coerce):
        try:
            attempt(value, spec.zone)
        except ValueError:
            continue
        return True
    return False
