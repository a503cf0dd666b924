"""Reconcile of tp_capital_signals: each day compared by count and hash, mismatching days re-copied.

Runs nightly (`questdb.reconcile_at`, source clock, over the last `reconcile_days` closed days) and
whenever the table was rebuilt or shrank. The source side digest is computed from QuestDB rows
page by page (QuestDB has no hash function); PostgreSQL computes the same order-independent sum
over `row_hash` of live rows. The result lands in the checkpoint (so in /status) and in metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
import structlog

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.errors import SourceUnavailable
from syncd.identifiers import quote_table
from syncd.model import Batch, TableChanges
from syncd.questdb.reader import QuestdbReader, format_timestamp, parse_timestamp
from syncd.questdb.refusals import Refusals
from syncd.questdb.sql import (
    SIGNAL_COLUMNS,
    SIGNAL_PAGES,
    SIGNALS_KEY,
    SIGNALS_PG_COLUMNS,
    SIGNALS_PG_TABLE,
    Cursor,
    day_bounds,
    hash_sum,
    next_page,
    signal_row,
)

log = structlog.get_logger(__name__)
_ONE_US = timedelta(microseconds=1)
STALE_LISTED = 20
"""Keys of held rows PostgreSQL keeps an older version of, listed in the reconcile's result."""

_LIVE_DAY = "ts >= $1 AND ts <= $2 AND deleted_at IS NULL"
_PG_TABLE = quote_table(SIGNALS_PG_TABLE)
_PG_DIGEST = f"""
    SELECT count(*) FILTER (WHERE NOT left_out) AS n,
           coalesce(sum(h) FILTER (WHERE NOT left_out), 0) AS s,
           coalesce(array_agg(signal_key) FILTER (WHERE left_out), '{{}}') AS kept
      FROM (SELECT signal_key, signal_key = ANY($3::text[]) AS left_out,
                   ('x' || encode(substr(row_hash, 1, 8), 'hex'))::bit(64)::bigint::numeric AS h
              FROM {_PG_TABLE} WHERE {_LIVE_DAY}) AS day"""


def reconcile_due(settings: QuestdbSettings, position: Mapping[str, Any], now: datetime) -> bool:
    """True when today's `reconcile_at` (source clock) has passed since the last reconcile."""
    last = parse_timestamp((position.get("reconcile") or {}).get("at"))
    hour, minute = (int(p) for p in settings.reconcile_at.split(":"))
    scheduled = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if scheduled > now:
        scheduled -= timedelta(days=1)
    return last is not None and last < scheduled


@dataclass(frozen=True, slots=True)
class DayParity:
    """One day of signals: the rows compared on each side and whether their hashes agree, and the
    rows left out because PostgreSQL refused QuestDB's version of them (`syncd.questdb.refusals`)."""

    day: str
    source_rows: int
    """QuestDB's rows of the day, held and discarded versions left out."""
    pg_rows: int
    """PostgreSQL's live rows of the day, the keys left out on the QuestDB side left out too."""
    clean: bool
    """The rows compared agree (held rows do not make a day mismatch: they are accounted for)."""
    held: tuple[str, ...] = ()
    """signal_key of each QuestDB row of the day held in quarantine, sorted."""
    stale: tuple[str, ...] = ()
    """Of `held`, the keys PostgreSQL still holds an older version of: QuestDB changed the row (an
    UPDATE) into a version PostgreSQL refuses, and PostgreSQL keeps its last good one."""


@dataclass(frozen=True, slots=True)
class SourceDay:
    """One day of QuestDB rows as the reconcile compares them."""

    digest: dict[str, bytes]
    """key → row_hash of the rows PostgreSQL is to hold."""
    left_out: dict[str, bool]
    """key → held (True: held in quarantine; False: that version discarded) of the rows it is not."""


class Reconciled(Protocol):
    """What the reconcile needs of the signals source it belongs to (its reader, position, batches)."""

    stream: str
    settings: QuestdbSettings
    reader: QuestdbReader
    position: dict[str, Any]
    refusals: Refusals

    def batch(self, tables: list[TableChanges], newest: datetime | None, observed: float | None) -> Batch:
        """A Batch carrying the source's current position as its checkpoint."""


class Reconciler:
    """Compares and repairs days of one signals source; reads PostgreSQL, never writes it."""

    def __init__(self, source: Reconciled, pg_dsn: str | None) -> None:
        self.source = source
        self.pg_dsn = pg_dsn
        self._conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        """Close the read connection to PostgreSQL."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def run(self, now: datetime) -> AsyncIterator[Batch]:
        """Compare each day in scope; yield repair batches, then one batch carrying the result."""
        position = self.source.position
        reason = position.pop("reconcile_pending", None) or "nightly"
        if self.pg_dsn is None or position.get("cursor") is None:
            position["reconcile"] = {"at": format_timestamp(now), "reason": reason, "skipped": True}
            return
        top = _watermark(Cursor.from_json(position.get("cursor")))
        mismatched: list[str] = []
        stale: list[str] = []
        repaired, held = 0, 0
        for day in self._days(now, top, reason):
            lo, hi = day_bounds(day)
            hi = min(hi - _ONE_US, top)
            parity = await self.compare(lo, hi)
            if not parity.clean:
                mismatched.append(lo.date().isoformat())
                async for batch in self._repair(lo, hi, now):
                    repaired += batch.size
                    yield batch
                # Compared again: a row the repair had to quarantine (QuestDB changed it into a
                # version PostgreSQL refuses) is held now, and named.
                parity = await self.compare(lo, hi)
            held += len(parity.held)
            stale += parity.stale
        metrics.VERIFY_MISMATCH_ROWS.labels(SIGNALS_PG_TABLE).set(repaired)
        # Each committed repair batch replaced the source's position with its checkpoint: write
        # the result into the current one, or it is lost (and a pending reason would stay).
        position = self.source.position
        position.pop("reconcile_pending", None)
        position["reconcile"] = {
            "at": format_timestamp(now),
            "reason": reason,
            "mismatched_days": mismatched,
            "repaired_rows": repaired,
            "held_rows": held,
            "stale_keys": stale[:STALE_LISTED],
        }
        if stale:
            # QuestDB changed these rows into versions PostgreSQL refuses: PostgreSQL serves the
            # previous one until the cause is fixed and the row replayed (or that version discarded).
            log.warning(
                "questdb rows held; postgresql keeps their previous version",
                stream=self.source.stream,
                rows=len(stale),
                keys=stale[:STALE_LISTED],
            )
        log.info(
            "reconcile done",
            stream=self.source.stream,
            reason=reason,
            mismatched=mismatched,
            repaired=repaired,
            held=held,
        )
        yield self.source.batch([], None, None)

    def _days(self, now: datetime, top: datetime, reason: str) -> list[datetime]:
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=self.source.settings.reconcile_days)
        # Nightly: closed days only. After a rebuild: the open day too, up to the watermark.
        last = today if reason != "nightly" else today - timedelta(days=1)
        days, day = [], first
        while day <= min(last, top):
            days.append(day)
            day += timedelta(days=1)
        return days

    async def _pg(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            assert self.pg_dsn is not None
            try:
                self._conn = await asyncpg.connect(self.pg_dsn, timeout=10)
            except (OSError, asyncpg.PostgresError) as exc:
                raise SourceUnavailable("postgres (reconcile)", type(exc).__name__) from exc
        return self._conn

    async def _source_day(self, lo: datetime, hi: datetime) -> SourceDay:
        """The source rows in [lo, hi] by key: those PostgreSQL is to hold, and those it is not."""
        day = SourceDay({}, {})
        refusals = self.source.refusals
        async for rows in self._source_pages(lo, hi):
            for row in rows:
                pg = signal_row(row)
                # A row held in quarantine is not in PostgreSQL on purpose (or PostgreSQL keeps
                # its last good version): it is no mismatch, and it is named.
                if refusals.blocks(SIGNALS_PG_TABLE, pg[1], pg[-1]):
                    day.left_out[pg[1]] = refusals.holds(SIGNALS_PG_TABLE, pg[1])
                else:
                    day.digest[pg[1]] = pg[-1]
        return day

    async def _source_pages(self, lo: datetime, hi: datetime) -> AsyncIterator[list[tuple[Any, ...]]]:
        cursor, more = Cursor(lo - _ONE_US), True
        reader, size = self.source.reader, self.source.settings.page_size
        while more:
            rows, cursor, more = await next_page(reader, SIGNAL_PAGES, cursor, hi, size)
            if rows:
                yield rows

    async def compare(self, lo: datetime, hi: datetime, *, content: bool = False) -> DayParity:
        """Count and order-independent hash of [lo, hi] on both sides (live PG rows only), the keys
        of rows PostgreSQL refused QuestDB's version of left out of both and named.

        By default PostgreSQL sums its stored `row_hash` (cheap, set-based: the nightly check);
        `content=True` re-hashes each live row from its columns, so a row changed in PostgreSQL
        behind syncd's back is found too (`syncd verify`).
        """
        source = await self._source_day(lo, hi)
        if content:
            pg, kept = await self._pg_content_digest(lo, hi, source.left_out)
            pg_rows, clean = len(pg), pg == source.digest
        else:
            row = await (await self._pg()).fetchrow(_PG_DIGEST, lo, hi, list(source.left_out))
            assert row is not None
            pg_rows, kept = int(row["n"]), list(row["kept"])
            pg_sum = int(row["s"]) % (1 << 64)
            clean = pg_rows == len(source.digest) and pg_sum == hash_sum(list(source.digest.values()))
        held = sorted(key for key, is_held in source.left_out.items() if is_held)
        stale = sorted(key for key in kept if source.left_out.get(key))
        return DayParity(lo.date().isoformat(), len(source.digest), pg_rows, clean, tuple(held), tuple(stale))

    async def _pg_content_digest(
        self, lo: datetime, hi: datetime, left_out: Mapping[str, bool]
    ) -> tuple[dict[str, bytes], list[str]]:
        """key → row_hash recomputed from the columns of each live PG row of [lo, hi] outside
        `left_out`, and the keys of `left_out` PostgreSQL holds a row of."""
        conn = await self._pg()
        digest: dict[str, bytes] = {}
        kept: list[str] = []
        query = f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM {_PG_TABLE} WHERE {_LIVE_DAY}"
        async with conn.transaction(readonly=True):
            async for record in conn.cursor(query, lo, hi, prefetch=self.source.settings.page_size):
                row = signal_row(tuple(record))
                if row[1] in left_out:
                    kept.append(row[1])
                else:
                    digest[row[1]] = row[-1]
        return digest, kept

    async def _repair(self, lo: datetime, hi: datetime, now: datetime) -> AsyncIterator[Batch]:
        """Re-copy the day page by page; live PG rows the source lacks get `deleted_at`."""
        keys: set[str] = set()
        async for rows in self._source_pages(lo, hi):
            pg_rows = [signal_row(r) for r in rows]
            keys.update(r[1] for r in pg_rows)
            yield self.source.batch([_changes(pg_rows)], None, None)
        cols = ", ".join(SIGNAL_COLUMNS)
        extra = await (await self._pg()).fetch(
            f"SELECT signal_key, {cols} FROM {_PG_TABLE} WHERE ts >= $1 AND ts <= $2 AND deleted_at IS NULL",
            lo,
            hi,
        )
        gone = [signal_row(tuple(r)[1:], now) for r in extra if r["signal_key"] not in keys]
        if gone:
            yield self.source.batch([_changes(gone)], None, None)


def _changes(rows: list[tuple[Any, ...]]) -> TableChanges:
    return TableChanges(SIGNALS_PG_TABLE, SIGNALS_PG_COLUMNS, SIGNALS_KEY, rows)


def _watermark(cursor: Cursor) -> datetime:
    assert cursor.ts is not None
    # Mid-group: the group itself is not fully applied yet.
    return cursor.ts if cursor.within is None else cursor.ts - _ONE_US
