"""Per-collection table specs: which LowDB key feeds which PostgreSQL table, and how a record maps.

A `TableSpec` turns one LowDB record into one row typed for asyncpg's binary COPY (aware datetimes
for timestamptz, `list[str]` for text[], plain Python objects for jsonb), validating it against the
same rules as the table's CHECK constraints so that PostgreSQL never has to reject a batch. Keys the
spec does not know are kept in `extra` and counted as schema drift. `lowdb_record_from_row` is the
inverse, used by the reverse path (PG → LowDB) during cutover.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any, Literal

import orjson

from syncd import metrics
from syncd.config import CollectionSettings, Layout
from syncd.errors import InvalidRecord
from syncd.model import Row
from syncd.poison import MAX_RECORD_BYTES, problem, unstorable_text

Kind = Literal["text", "id", "ref", "timestamp", "tags", "object", "int", "bool"]
Emit = Literal["always", "if_set"]
"""How the inverse writes a field: always (null included), or only when set (not null, not `{}`)."""

HASH_BYTES = 16
MAX_KEY_CHARS = 1000
"""Longest id kept as a key: a btree index entry (the table's and quarantine's) holds ~2.7 kB."""


def canonical(record: Any) -> bytes:
    """The canonical JSON of a source record (sorted keys), what `record_hash` hashes."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # Deeper than orjson writes (the record is poison and will be quarantined): a stable
        # stand-in that no record orjson can write produces, so the hash never crashes the stream.
        return b"\x00unhashable:" + _python_json(record).encode("utf-8", "surrogatepass")


def record_hash(record: Any) -> bytes:
    """blake2b-128 of the canonical JSON of a source record (sorted keys): the `row_hash` column."""
    return blake2b(canonical(record), digest_size=HASH_BYTES).digest()


def _python_json(record: Any) -> str:
    try:
        return json.dumps(record, sort_keys=True, separators=(",", ":"))
    except (RecursionError, ValueError, TypeError):
        return ""


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

    def convert(self, value: Any) -> Any:
        """The column value for `value`; raises ValueError with a reason naming the field."""
        if value is None:
            if self.required and self.default is None:
                raise ValueError(f"{self.source} is required")
            return _copy_default(self.default)
        converted = _CONVERTERS[self.kind](self, value)
        self._check(converted)
        return converted

    def _check(self, value: Any) -> None:
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


def _copy_default(default: Any) -> Any:
    # Mutable defaults ({} / []) are copied so rows never share one object.
    return type(default)() if isinstance(default, dict | list) else default


def _text(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{f.source} must be a string, got {type(value).__name__}")
    _storable(unstorable_text(value, f.source))
    return value


def _storable(reason: str | None) -> None:
    if reason is not None:
        raise ValueError(reason)


def _id(f: Field, value: Any) -> str:
    # ids are opaque text; integer ids (Documentation's counters) become their decimal text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _text(f, value)
    if not text:
        raise ValueError(f"{f.source} must not be empty")
    return text


def _timestamp(f: Field, value: Any) -> datetime:
    text = _text(f, value)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{f.source} is not an ISO 8601 timestamp: {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{f.source} has no timezone: {text!r}")
    return parsed


def _tags(f: Field, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{f.source} must be a list of strings")
    for i, tag in enumerate(value):
        _storable(unstorable_text(tag, f"{f.source}[{i}]"))
    return list(value)


def _object(f: Field, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{f.source} must be an object, got {type(value).__name__}")
    # The record counts as one level above the object.
    _storable(problem({f.source: value}, "record"))
    return value


def _int(f: Field, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{f.source} must be an integer, got {value!r}")
    if f.bounds is None and not INT4[0] <= value <= INT4[1]:
        raise ValueError(f"{f.source} must be within {INT4[0]}..{INT4[1]} (an integer column), got {value}")
    return value


INT4 = (-(2**31), 2**31 - 1)
"""An `integer` column's range, for int fields without bounds of their own."""


def _bool(f: Field, value: Any) -> bool:
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


def format_timestamp(value: datetime) -> str:
    """`Date.toISOString()`'s form: UTC, milliseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One LowDB collection (top-level key) and its PostgreSQL table.

    Typed specs map fields to columns; a document spec (`document=True`, layout `generic`) stores
    the whole record as `doc` jsonb under `(collection, id)` in `syncd.documents`.
    """

    collection: str
    table: str
    fields: tuple[Field, ...] = ()
    int_ids: bool = False
    document: bool = False
    key_field: str = "id"
    _known: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known", frozenset(f.source for f in self.fields))

    @property
    def columns(self) -> tuple[str, ...]:
        """Row layout: the spec's columns, then `extra` and `row_hash`."""
        if self.document:
            return ("collection", "id", "doc", "row_hash")
        return (*(f.column for f in self.fields), "extra", "row_hash")

    @property
    def key(self) -> tuple[str, ...]:
        """The table's primary key columns."""
        return ("collection", "id") if self.document else ("id",)

    max_record_bytes: int = MAX_RECORD_BYTES
    """Records whose text is longer are quarantined, never parsed (`lowdb.max_record_size`)."""

    def record_key(self, record: Any) -> str | None:
        """The record's id as text, or None when it has no usable id."""
        if not isinstance(record, dict):
            return None
        value = record.get(self.key_field)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
            return None
        return value if unstorable_text(value, "") is None else None

    def keyless_reason(self, record: Any) -> str:
        """Why `record_key` found no usable id in `record`."""
        value = record.get(self.key_field) if isinstance(record, dict) else None
        if isinstance(value, str) and len(value) > MAX_KEY_CHARS:
            return f"{self.key_field!r} is {len(value)} characters, over the {MAX_KEY_CHARS} an index key holds"
        found = unstorable_text(value, repr(self.key_field)) if isinstance(value, str) else None
        return found or f"record has no usable {self.key_field!r} (string or integer)"

    def key_of(self, record_key: str) -> Row:
        """The PK tuple of a record key, in `key` order."""
        return (self.collection, record_key) if self.document else (record_key,)

    def to_row(self, record: Any, digest: bytes | None = None) -> Row:
        """Validate and map one record; raises InvalidRecord with the reason."""
        key = self.record_key(record)
        if not isinstance(record, dict):
            raise InvalidRecord(self.table, None, f"record must be an object, got {type(record).__name__}")
        if key is None:
            raise InvalidRecord(self.table, None, self.keyless_reason(record))
        digest = digest if digest is not None else record_hash(record)
        if self.document:
            found = problem(record, "record")
            if found is not None:
                raise InvalidRecord(self.table, key, found)
            return (self.collection, key, record, digest)
        try:
            values = [f.convert(record.get(f.source)) for f in self.fields]
            extra = self._extra(record)
        except ValueError as exc:
            raise InvalidRecord(self.table, key, str(exc)) from None
        return (*values, extra, digest)

    def _extra(self, record: Mapping[str, Any]) -> dict[str, Any]:
        extra = {k: v for k, v in record.items() if k not in self._known}
        if extra:
            _storable(problem(extra, "record"))
        for name in extra:
            metrics.SCHEMA_DRIFT.labels(self.table, name).inc()
        return extra

    def record_from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The LowDB record a PostgreSQL row stands for (see `lowdb_record_from_row`)."""
        if self.document:
            doc: dict[str, Any] = dict(row["doc"])
            return doc
        record: dict[str, Any] = {}
        for f in self.fields:
            value = row.get(f.column)
            if f.emit == "if_set" and (value is None or value == {}):
                continue
            record[f.source] = f.to_source(value, int_ids=self.int_ids)
        record.update(row.get("extra") or {})
        return record


def lowdb_record_from_row(spec: TableSpec, row: Mapping[str, Any]) -> dict[str, Any]:
    """Map a PostgreSQL row (column → value, e.g. an asyncpg Record) back to its LowDB record.

    The inverse of `TableSpec.to_row` for the reverse path (PG → LowDB, cutover). Columns become
    upstream's camelCase keys in upstream's key order, timestamps `Date.toISOString()` strings,
    Documentation's numeric ids integers again, and `extra` keys are restored. Fields marked
    `if_set` (e.g. `createdBy`, `metadata`) are left out when null or `{}`, as upstream's older
    records lack them; otherwise null is written. Bookkeeping columns (row_hash, synced_at) are
    ignored. For a record in upstream's shape, `record_hash(result)` equals the row's `row_hash`.
    """
    return spec.record_from_row(row)


# -- the built-in layouts ---------------------------------------------------------------------

_SLUG = re.compile(r"[a-z0-9-]{1,100}")
_DOC_SLUG = re.compile(r"[a-z0-9_-]{1,100}")


def _f(source: str, column: str | None = None, kind: Kind = "text", **kw: Any) -> Field:
    return Field(source, column or source, kind, **kw)


def _item_fields(category: re.Pattern[str], priorities: Sequence[str], statuses: Sequence[str]) -> list[Field]:
    return [
        _f("id", kind="id", required=True),
        _f("title", required=True, not_blank=True),
        _f("description"),
        _f("category", required=True, pattern=category),
        _f("priority", default="medium", choices=frozenset(priorities)),
        _f("status", default="new", choices=frozenset(statuses)),
        _f("tags", kind="tags", default=[]),
    ]


ITEM_PRIORITIES = ("low", "medium", "high", "critical")
ITEM_STATUSES = ("new", "review", "in-progress", "completed", "rejected")
DOC_PRIORITIES = (*ITEM_PRIORITIES, "urgent")
DOC_STATUSES = (*ITEM_STATUSES, "backlog", "todo", "in_progress", "done")


def workspace_items(collection: str) -> TableSpec:
    """Idea Bank / Workspace items (`items`, or the MVP's `ideas`) → workspace.workspace_items."""
    fields = [
        *_item_fields(_SLUG, ITEM_PRIORITIES, ITEM_STATUSES),
        _f("createdAt", "created_at", "timestamp", required=True),
        _f("updatedAt", "updated_at", "timestamp"),
        _f("createdBy", "created_by", emit="if_set"),
        _f("updatedBy", "updated_by", emit="if_set"),
        _f("metadata", kind="object", default={}, emit="if_set"),
    ]
    return TableSpec(collection, "workspace.workspace_items", tuple(fields))


WORKSPACE_CATEGORIES = TableSpec(
    "categories",
    "workspace.workspace_categories",
    (
        _f("id", kind="id", required=True),
        _f("name", required=True, pattern=_SLUG),
        _f("description"),
        _f("color"),
        _f("display_order", kind="int"),
        _f("active", kind="bool", default=True),
    ),
)

DOCUMENTATION_SYSTEMS = TableSpec(
    "systems",
    "documentation.documentation_systems",
    (
        _f("id", kind="id", required=True),
        _f("name", required=True, not_blank=True),
        _f("shortName", "short_name"),
        _f("description", emit="if_set"),
        _f("type", choices=frozenset({"api", "webapp", "docs", "tool"}), emit="if_set"),
        _f("url", emit="if_set"),
        _f("host", emit="if_set"),
        _f("port", kind="int", bounds=(1, 65535)),
        _f("status", default="unknown", choices=frozenset({"online", "offline", "error", "unknown"})),
        _f("color"),
        _f("icon"),
        _f("createdAt", "created_at", "timestamp", emit="if_set"),
        _f("updatedAt", "updated_at", "timestamp", emit="if_set"),
    ),
    int_ids=True,
)
DOCUMENTATION_IDEAS = TableSpec(
    "ideas",
    "documentation.documentation_ideas",
    (
        *_item_fields(_DOC_SLUG, DOC_PRIORITIES, DOC_STATUSES),
        _f("system_id", kind="ref", emit="if_set"),
        _f("createdAt", "created_at", "timestamp", required=True),
        _f("updatedAt", "updated_at", "timestamp"),
    ),
    int_ids=True,
)
DOCUMENTATION_LINKS = TableSpec(
    "links",
    "documentation.documentation_links",
    (
        _f("id", kind="id", required=True),
        _f("url"),
        _f("title"),
        _f("idea_id", kind="ref"),
        _f("system_id", kind="ref", emit="if_set"),
        _f("createdAt", "created_at", "timestamp", emit="if_set"),
    ),
    int_ids=True,
)
DOCUMENTATION_FILES = TableSpec(
    "files",
    "documentation.documentation_files",
    (
        _f("id", kind="id", required=True),
        _f("idea_id", kind="ref"),
        _f("filename", required=True, not_blank=True),
        _f("original_name"),
        _f("mime_type"),
        _f("size", kind="int", bounds=(0, 2**63 - 1)),
        _f("createdAt", "created_at", "timestamp", emit="if_set"),
    ),
    int_ids=True,
)

DOCUMENTATION_COUNTERS = frozenset({"nextId", "nextLinkId", "nextFileId", "nextSystemId"})
"""Top-level integers of the Documentation file: allocation state, not records."""


def specs_for_layout(layout: Layout, collections: Sequence[CollectionSettings] = ()) -> tuple[TableSpec, ...]:
    """The table specs of a LowDB layout, in apply order (parents first)."""
    if layout == "workspace":
        return (WORKSPACE_CATEGORIES, workspace_items("items"))
    if layout == "ideas-mvp":
        return (workspace_items("ideas"),)
    if layout == "documentation":
        return (DOCUMENTATION_SYSTEMS, DOCUMENTATION_IDEAS, DOCUMENTATION_LINKS, DOCUMENTATION_FILES)
    return tuple(TableSpec(c.name, "syncd.documents", document=True, key_field=c.key) for c in collections)


def ignored_top_level(layout: Layout) -> frozenset[str]:
    """Top-level keys of a layout that hold no records and are not drift."""
    return DOCUMENTATION_COUNTERS if layout == "documentation" else frozenset()


def spec_for_table(specs: Sequence[TableSpec], table: str, collection: str | None = None) -> TableSpec:
    """The spec writing `table` (and `collection`, for syncd.documents); KeyError if none."""
    for spec in specs:
        if spec.table == table and (collection is None or spec.collection == collection):
            return spec
    raise KeyError(f"no spec for {table}" + (f" collection {collection}" if collection else ""))
