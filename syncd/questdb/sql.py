"""QuestDB table specs, the SQL the poller issues, the page cursor, and row → PG row mapping.

Every query is plain QuestDB SQL that runs unchanged over `/exec` and PG wire: `LIMIT n` only
(QuestDB has no OFFSET), timestamps as ISO literals with `Z` rather than bind parameters, no
`systimestamp()` (it changes per call and must not filter the designated timestamp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import blake2b
from typing import Any

import orjson

from syncd.model import Row
from syncd.questdb.reader import QuestdbReader, Rows, format_timestamp, parse_timestamp

SIGNAL_COLUMNS = (
    "ts",
    "channel",
    "signal_type",
    "asset",
    "buy_min",
    "buy_max",
    "target_1",
    "target_2",
    "target_final",
    "stop",
    "raw_message",
    "source",
    "ingested_at",
)
SIGNALS_PG_COLUMNS = ("ts", "signal_key", *SIGNAL_COLUMNS[1:], "deleted_at", "row_hash")
SIGNALS_KEY = ("ts", "signal_key")


@dataclass(frozen=True, slots=True)
class VersionedSpec:
    """A QuestDB table with a row per version; PG holds the latest per `id`."""

    source_table: str
    pg_table: str
    columns: tuple[str, ...]
    """Columns selected and copied; secret columns (bot `token`) are simply never listed."""


VERSIONED = {
    "telegram_bots": VersionedSpec(
        "telegram_bots",
        "signals.telegram_bots",
        ("id", "username", "bot_type", "description", "status", "created_at", "updated_at"),
    ),
    "telegram_channels": VersionedSpec(
        "telegram_channels",
        "signals.telegram_channels",
        (
            "id",
            "label",
            "channel_id",
            "channel_type",
            "description",
            "status",
            "signal_count",
            "last_signal",
            "created_at",
            "updated_at",
        ),
    ),
}
SIGNALS_TABLE = "tp_capital_signals"
DELETED_TABLE = "tp_capital_signals_deleted"
SIGNALS_PG_TABLE = "signals.tp_capital_signals"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Composite watermark over (order column, tie column).

    Rows with `ts` below `ts` are done. `within` is None when the whole `ts` group is done too;
    otherwise the group is being paged by the tie column and `within` is the last tie value done
    ("" = only its NULL-tie rows are done).
    """

    ts: datetime | None = None
    within: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The checkpoint form."""
        return {"ts": None if self.ts is None else format_timestamp(self.ts), "within": self.within}

    @classmethod
    def from_json(cls, raw: Any) -> Cursor:
        """Inverse of `as_json`; tolerates a missing position."""
        if not raw:
            return cls()
        return cls(parse_timestamp(raw.get("ts")), raw.get("within"))


@dataclass(frozen=True, slots=True)
class PageSpec:
    """What to page through: table, columns, order column, tie column, an optional extra filter."""

    table: str
    columns: tuple[str, ...]
    order: str
    tie: str
    where: str = ""


SIGNAL_PAGES = PageSpec(SIGNALS_TABLE, SIGNAL_COLUMNS, "ts", "ingested_at")
"""The signals in (ts, ingested_at) order: the stream's pages, the reconcile's and the backfill's."""
DELETED_PAGES = PageSpec(DELETED_TABLE, (*SIGNAL_COLUMNS, "deleted_at"), "deleted_at", "ingested_at")
"""The deleted signals in (deleted_at, ingested_at) order."""


def lit(value: datetime) -> str:
    """A timestamp literal both QuestDB and PostgreSQL accept."""
    return f"'{format_timestamp(value)}'"


def range_query(spec: PageSpec, lo: datetime | None, hi: datetime, limit: int) -> str:
    """Rows with lo < order <= hi in order, at most `limit`."""
    conds = [f"{spec.order} > {lit(lo)}"] if lo is not None else []
    conds.append(f"{spec.order} <= {lit(hi)}")
    if spec.where:
        conds.append(f"({spec.where})")
    return (
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} WHERE {' AND '.join(conds)} "
        f"ORDER BY {spec.order} LIMIT {limit}"
    )


def backlog_query(spec: PageSpec, cursor: Cursor, hi: datetime) -> str:
    """The number of rows after `cursor` up to `hi`: what `next_page` has still to read.

    A group being paged counts only its rows past the tie value done; the lower bound stays a
    plain range on the order column, so QuestDB counts by an interval scan of the designated ts."""
    conds = [f"{spec.order} <= {lit(hi)}"]
    if cursor.ts is not None and cursor.within is None:
        conds.append(f"{spec.order} > {lit(cursor.ts)}")
    elif cursor.ts is not None:
        tie = f"{spec.tie} > '{cursor.within}'" if cursor.within else f"{spec.tie} IS NOT NULL"
        conds += [f"{spec.order} >= {lit(cursor.ts)}", f"({spec.order} > {lit(cursor.ts)} OR {tie})"]
    if spec.where:
        conds.append(f"({spec.where})")
    return f"SELECT count(*) FROM {spec.table} WHERE {' AND '.join(conds)}"


def group_query(spec: PageSpec, ts: datetime, within: str, limit: int) -> str:
    """The next rows of one order-column group, paged by the tie column."""
    tie = f"{spec.tie} > '{within}'" if within else f"{spec.tie} IS NOT NULL"
    extra = f" AND ({spec.where})" if spec.where else ""
    return (
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} WHERE {spec.order} = {lit(ts)} "
        f"AND {tie}{extra} ORDER BY {spec.tie} LIMIT {limit}"
    )


def null_tie_query(spec: PageSpec, ts: datetime) -> str:
    """The rows of one group whose tie column is NULL (legacy rows: few, read at once)."""
    extra = f" AND ({spec.where})" if spec.where else ""
    return (
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} WHERE {spec.order} = {lit(ts)} "
        f"AND {spec.tie} IS NULL{extra}"
    )


async def next_page(
    reader: QuestdbReader, spec: PageSpec, cursor: Cursor, hi: datetime, limit: int
) -> tuple[list[tuple[Any, ...]], Cursor, bool]:
    """One bounded page after `cursor` up to `hi`: (rows, cursor after them, more may follow).

    Ties on the order column are unspecified in QuestDB, so a page never ends inside a group:
    a full page drops its trailing group (re-read next page), and a group larger than a page is
    paged by the tie column instead. Equal timestamps are thus neither skipped nor duplicated.
    """
    order_pos, tie_pos = spec.columns.index(spec.order), spec.columns.index(spec.tie)
    if cursor.within is not None and cursor.ts is not None:
        rows = (await reader.query(group_query(spec, cursor.ts, cursor.within, limit))).rows
        if len(rows) < limit:
            return rows, Cursor(cursor.ts, None), True
        return rows, Cursor(cursor.ts, _tie_text(rows[-1][tie_pos])), True
    rows = (await reader.query(range_query(spec, cursor.ts, hi, limit))).rows
    if len(rows) < limit:
        return rows, (Cursor(rows[-1][order_pos], None) if rows else cursor), False
    last = rows[-1][order_pos]
    if rows[0][order_pos] != last:
        kept = _head(rows, next(i for i, r in enumerate(rows) if r[order_pos] == last))
        return kept, Cursor(kept[-1][order_pos], None), True
    nulls = (await reader.query(null_tie_query(spec, last))).rows
    return nulls, Cursor(last, ""), True


def _head(rows: list[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    # Rows are ordered by the order column, so the trailing group is a suffix.
    return rows.head(n) if isinstance(rows, Rows) else rows[:n]


def _tie_text(value: Any) -> str:
    return format_timestamp(value) if isinstance(value, datetime) else str(value)


_DOUBLES = range(SIGNAL_COLUMNS.index("buy_min"), SIGNAL_COLUMNS.index("stop") + 1)


def _timestamp_text(value: Any) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


def canonical(values: Sequence[Any]) -> bytes:
    """The canonical row the hashes cover: a JSON array, timestamps as µs ISO strings with `Z`,
    NaN and ±Inf as null (orjson writes them so itself; only datetimes need a Python call)."""
    return orjson.dumps(values, default=_timestamp_text, option=orjson.OPT_PASSTHROUGH_DATETIME)


def row_hash(values: Sequence[Any]) -> bytes:
    """blake2b-16 of the canonical row."""
    return blake2b(canonical(values), digest_size=16).digest()


def signal_key(values: Sequence[Any]) -> str:
    """`ingested_at` in µs ISO; for rows without it (older rows), a stable content hash."""
    ingested = values[-1]
    if ingested is not None:
        return format_timestamp(ingested)
    return "h:" + blake2b(canonical(values), digest_size=16).hexdigest()


def signal_row(values: Sequence[Any], deleted_at: datetime | None = None) -> Row:
    """A QuestDB signal row (SIGNAL_COLUMNS order) as a PG row (SIGNALS_PG_COLUMNS order).

    The backfill's hot path: per row one orjson call, one blake2b, two timestamp texts; NaN and
    ±Inf doubles (which the readers already turn into None) become NULL here too.
    """
    clean = values if all(values[i] is None or math.isfinite(values[i]) for i in _DOUBLES) else _finite(values)
    digest = blake2b(canonical([*clean, deleted_at]), digest_size=16).digest()
    return (clean[0], signal_key(clean), *clean[1:], deleted_at, digest)


def signal_row_text(raw: list[Any], values: Sequence[Any]) -> Row:
    """`signal_row(values)` from the row as `/exec` sent it (`raw`: timestamps as QuestDB's µs
    text, NaN as null): the same PG row with no datetime formatted (the unit tests check both agree)."""
    ingested = raw[-1]
    digest = blake2b(orjson.dumps([*raw, None]), digest_size=16).digest()
    key = ingested if ingested is not None else "h:" + blake2b(orjson.dumps(raw), digest_size=16).hexdigest()
    return (values[0], key, *values[1:], None, digest)


def _finite(values: Sequence[Any]) -> list[Any]:
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


def versioned_row(values: Sequence[Any]) -> Row:
    """A versioned-table row with its row_hash appended."""
    return (*values, row_hash(values))


def day_bounds(day: datetime) -> tuple[datetime, datetime]:
    """[day 00:00, next day 00:00) in UTC; `hi` inclusive bound is one µs before the next day."""
    start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def hash_sum(hashes: Sequence[bytes]) -> int:
    """Order-independent digest of a set of row hashes (the same sum PostgreSQL computes)."""
    return sum(int.from_bytes(h[:8], "big", signed=True) for h in hashes) % (1 << 64)
