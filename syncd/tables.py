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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, tzinfo
from hashlib import blake2b
from typing import Any

import orjson

from syncd import metrics
from syncd.config import CollectionSettings, Layout, LowdbSettings
from syncd.errors import InvalidRecord
from syncd.fields import ABSENT, INEXACT, Field, Kind, Unstorable, exact, is_iso_millis, same_json
from syncd.model import Row
from syncd.poison import MAX_RECORD_BYTES, problem, unstorable_text

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
    zone: tzinfo = UTC
    """The zone a timestamp without one is read in (`[[lowdb]] timezone`), as JavaScript would."""
    _known: frozenset[str] = field(init=False, repr=False, compare=False)
    _by_source: Mapping[str, Field] = field(init=False, repr=False, compare=False)
    _exact: tuple[tuple[Field, str, Callable[[], Any], Any, Callable[[Any], Any]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known", frozenset(f.source for f in self.fields))
        object.__setattr__(self, "_by_source", {f.source: f for f in self.fields})
        readers = [(f, exact(f, int_ids=self.int_ids)) for f in self.fields]
        object.__setattr__(self, "_exact", tuple((f, f.source, e.absent, e.null, e.present) for f, e in readers))

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

    def to_row(
        self,
        record: Any,
        digest: bytes | None = None,
        stated: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> Row:
        """Validate and map one record; raises InvalidRecord with the reason.

        A value a column cannot hold exactly takes its documented coercion (`syncd.fields`) and
        is kept raw in `extra` under its own key, counted as schema drift like an unknown key.
        `stated` is an operator's coercion (`syncd quarantine accept`): source key → the value its
        column takes instead, the record's own value kept in `extra` the same way. `key` is the
        record's `record_key` when the caller has it already (the diff does, for every record).
        """
        key = key if key is not None else self.record_key(record)
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
        extra = {} if self._known.issuperset(record) else {k: v for k, v in record.items() if k not in self._known}
        try:
            values = self._values(record, extra) if stated is None else self._stated_values(record, stated, extra)
        except ValueError as exc:  # Unstorable too: the record is poison
            raise InvalidRecord(self.table, key, str(exc)) from None
        found = problem(extra, "record") if extra else None
        if found is not None:
            raise InvalidRecord(self.table, key, found)
        for name in extra:
            metrics.SCHEMA_DRIFT.labels(self.table, name).inc()
        return (*values.values(), extra, digest)

    def _values(self, record: Mapping[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """Source key → column value of every field; ValueError when the record must be held."""
        values: dict[str, Any] = {}
        get = record.get
        for f, source, absent, null, present in self._exact:
            # The value as it is when its column holds it exactly (the usual case), else the full mapping.
            raw = get(source, ABSENT)
            value = absent() if raw is ABSENT else null if raw is None else present(raw)
            values[source] = value if value is not INEXACT else self._column_value(f, record, values, extra)
        return values

    def _stated_values(
        self, record: Mapping[str, Any], stated: Mapping[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        """`_values` with an operator's stated values for the fields in `stated`."""
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.source in stated:
                values[f.source] = self._stated_value(f, record, stated[f.source], extra)
            else:
                values[f.source] = self._column_value(f, record, values, extra)
        return values

    def _column_value(
        self, f: Field, record: Mapping[str, Any], values: Mapping[str, Any], extra: dict[str, Any]
    ) -> Any:
        raw = record.get(f.source)
        if raw is None and f.derived_from is not None:
            if f.source in record:
                extra[f.source] = None
            return values[f.derived_from]
        try:
            value = f.convert(raw, self.zone)
        except Unstorable:
            raise
        except ValueError:
            value = f.coerce(raw, self.zone)
        # The column holding the record's own value (the usual text, object or number) gives it back
        # as it is: no inverse to compute and compare, which is most of a first load's mapping.
        if value is raw and not (self.int_ids and f.kind in ("id", "ref")):
            return value
        if f.kind == "timestamp" and isinstance(raw, str) and raw.isascii() and is_iso_millis(raw):
            return value  # upstream's own form: the column gives it back as it is
        if f.source in record and not same_json(f.to_source(value, int_ids=self.int_ids), raw):
            extra[f.source] = raw
        return value

    def _stated_value(self, f: Field, record: Mapping[str, Any], stated: Any, extra: dict[str, Any]) -> Any:
        value = f.convert(stated, self.zone)  # exactly: `accept` refuses a value the column cannot hold
        if f.source in record and not same_json(f.to_source(value, int_ids=self.int_ids), record[f.source]):
            extra[f.source] = record[f.source]
        return value

    def content(self, values: Sequence[Any]) -> Sequence[Any]:
        """A row's content columns (`columns` order, without `row_hash`) as the file would read them
        back: `extra` without a raw value its column no longer holds (a service changed the column
        since, or an operator's accepted coercion stands instead), which the inverse never writes.
        """
        at = len(self.fields)
        extra = None if self.document else values[at]
        if not extra or self._known.isdisjoint(extra):
            return values
        row = dict(zip(self.columns, values, strict=False))
        kept = {
            k: v
            for k, v in extra.items()
            if k not in self._by_source or self._still_holds(self._by_source[k], v, row[self._by_source[k].column], row)
        }
        return (*values[:at], kept, *values[at + 1 :])

    def field_of(self, source: str) -> Field | None:
        """The field read from LowDB key `source`, if the spec has one."""
        return self._by_source.get(source)

    def record_from_row(self, row: Mapping[str, Any], like: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The LowDB record a PostgreSQL row stands for (see `lowdb_record_from_row`)."""
        if self.document:
            doc: dict[str, Any] = dict(row["doc"])
            return doc if like is None else _ordered_like(doc, like)
        extra: Mapping[str, Any] = row.get("extra") or {}
        record: dict[str, Any] = {}
        for f in self.fields:
            value = row.get(f.column)
            absent = f.source not in extra and (f.source not in like if like is not None else True)
            if absent and not (self._differs_from_absent(f, value, row) if like else self._emits(f, value, row)):
                continue
            raw = extra.get(f.source, ABSENT)
            if raw is not ABSENT and self._still_holds(f, raw, value, row):
                record[f.source] = raw
            else:
                record[f.source] = f.to_source(value, int_ids=self.int_ids)
        record.update((k, v) for k, v in extra.items() if k not in self._known)
        return record if like is None else _ordered_like(record, like)

    def _differs_from_absent(self, f: Field, value: Any, row: Mapping[str, Any]) -> bool:
        # A key the file's record lacks comes back only when the column no longer holds what the
        # missing key stands for (its default, or the field it derives from).
        if f.derived_from is not None:
            return bool(value != row.get(self._by_source[f.derived_from].column))
        return bool(value != f.default) if not f.required else True

    def _emits(self, f: Field, value: Any, row: Mapping[str, Any]) -> bool:
        if f.emit == "always":
            return True
        if value is None or value == {}:
            return False
        origin = self._by_source.get(f.derived_from) if f.derived_from else None
        return origin is None or value != row.get(origin.column)

    def _still_holds(self, f: Field, raw: Any, value: Any, row: Mapping[str, Any]) -> bool:
        # The raw value in extra stands for the column only while the column holds its coercion: a
        # service that changed the column since wrote a new value, and that one wins.
        if raw is None and f.derived_from is not None:
            origin = self._by_source[f.derived_from]
            return bool(value == row.get(origin.column))
        try:
            try:
                held = f.convert(raw, self.zone)
            except ValueError:
                held = f.coerce(raw, self.zone)
        except ValueError:
            return False
        return bool(held == value)


def _same_value(a: Any, b: Any) -> bool:
    # Order-insensitive for object keys, strict for types (1, 1.0 and true differ).
    return a is b or canonical(a) == canonical(b)


def _ordered_like(record: dict[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with the keys `like` has first, in `like`'s order; its other keys after, as they are.

    A value equal to `like`'s is `like`'s own object: jsonb orders an object's keys its own way, so
    an unchanged nested object keeps the order the file has.
    """
    ordered = {k: like[k] if _same_value(record[k], like[k]) else record[k] for k in like if k in record}
    ordered.update((k, v) for k, v in record.items() if k not in ordered)
    return ordered


def lowdb_record_from_row(
    spec: TableSpec, row: Mapping[str, Any], like: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Map a PostgreSQL row (column → value, e.g. an asyncpg Record) back to its LowDB record.

    The inverse of `TableSpec.to_row` for the reverse path (PG → LowDB, cutover). Columns become
    upstream's keys, timestamps `Date.toISOString()` strings, Documentation's numeric ids integers
    again, and `extra` is restored: unknown keys, and the raw value of a field whose column took a
    coercion (while the column still holds it). `like` is the record as the file has it now: its
    keys are kept, in its order (a `"metadata": {}` or `"createdBy": null` that was there stays),
    and keys it lacks follow in upstream's order. Without `like` (a record PostgreSQL created),
    fields marked `if_set` are left out when null, `{}` or equal to the field they derive from.
    Bookkeeping columns (row_hash, synced_at) are ignored. For a record in upstream's shape,
    `record_hash(result)` equals the row's `row_hash`.
    """
    return spec.record_from_row(row, like)


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
        # A record PostgreSQL created gets the shape the current service writes (these three included);
        # an older record without them keeps its own keys (the reverse path passes it as `like`).
        _f("createdBy", "created_by"),
        _f("updatedBy", "updated_by"),
        _f("metadata", kind="object", default={}),
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
        _f("display_order", "sort_order", "int"),
        _f("active", "is_active", "bool", default=True),
        # The Workspace API's PostgreSQL columns that LowDB's categories lack: written back only
        # when a service set them (a display name other than the name, its timestamps).
        _f("display_name", derived_from="name", emit="if_set"),
        _f("created_at", kind="timestamp", emit="if_set"),
        _f("updated_at", kind="timestamp", emit="if_set"),
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


def specs_for_layout(
    layout: Layout, collections: Sequence[CollectionSettings] = (), zone: tzinfo = UTC
) -> tuple[TableSpec, ...]:
    """The table specs of a LowDB layout, in apply order (parents first), reading zone-less
    timestamps in `zone`."""
    return tuple(replace(spec, zone=zone) for spec in _layout_specs(layout, collections))


def specs_for(settings: LowdbSettings) -> tuple[TableSpec, ...]:
    """The table specs of one configured LowDB file (its zone, its record size limit)."""
    return tuple(
        replace(spec, max_record_bytes=settings.max_record_size)
        for spec in specs_for_layout(settings.layout, settings.collections, settings.zone)
    )


def _layout_specs(layout: Layout, collections: Sequence[CollectionSettings]) -> tuple[TableSpec, ...]:
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
