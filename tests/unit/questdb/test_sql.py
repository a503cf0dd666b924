"""Unit tests: the cursor and the SQL the QuestDB poller builds, keys and hashes, error mapping."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from syncd.config import QuestdbSettings
from syncd.errors import QueryRejected, TableMissing
from syncd.questdb.reader import Result, classify_error, format_timestamp
from syncd.questdb.reconcile import reconcile_due
from syncd.questdb.sql import (
    Cursor,
    PageSpec,
    group_query,
    hash_sum,
    next_page,
    range_query,
    row_hash,
    signal_key,
    signal_row,
)
from tests.fakes.questdb import UPSTREAM_DDL
from tests.fakes.questdb_engine import Store
from tests.fakes.questdb_sql import SqlError

T0 = datetime(2025, 10, 11, 12, 0, tzinfo=UTC)
SPEC = PageSpec("t", ("ts", "v", "ingested_at"), "ts", "ingested_at")


def test_queries_are_valid_on_questdb_and_postgresql() -> None:
    """Only `LIMIT n`, ISO literals with µs and Z, no OFFSET, no systimestamp."""
    for sql in (range_query(SPEC, T0, T0 + timedelta(hours=1), 5), range_query(SPEC, None, T0, 5),
                group_query(SPEC, T0, "2025-10-11T12:00:00.000001Z", 5), group_query(SPEC, T0, "", 5)):
        assert re.search(r"LIMIT \d+$", sql), sql
        assert "OFFSET" not in sql.upper()
        assert "systimestamp" not in sql
    assert "'2025-10-11T12:00:00.000000Z'" in range_query(SPEC, T0, T0, 1)


class StoreReader:
    """A reader over the emulator's store, without HTTP: exercises next_page against QuestDB semantics."""

    transport = "http"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def query(self, sql: str) -> Result:
        """Run on the store; convert µs to datetimes as the HTTP reader would."""
        answer = self.store.execute(sql)
        rows = [tuple(T0.replace(year=1970, month=1, day=1, hour=0, minute=0) + timedelta(microseconds=v)
                      if t == "TIMESTAMP" and v is not None else v for v, t in zip(r, answer.types, strict=True))
                for r in answer.rows]
        return Result(tuple(answer.names), tuple(answer.types), rows)

    async def close(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize("page", [1, 2, 3, 5, 7, 50])
async def test_pages_never_skip_or_duplicate_equal_timestamps(page: int) -> None:
    """Groups of 1..9 rows on one ts, ties shuffled on every read, NULL ingested_at mixed in."""
    store = Store()
    store.shuffle_ties = True
    store.execute("CREATE TABLE t (ts TIMESTAMP, v LONG, ingested_at TIMESTAMP) TIMESTAMP(ts)")
    n = 0
    for g in range(12):
        for k in range(g % 9 + 1):
            ingested = "null" if k == 4 else f"'{format_timestamp(T0 + timedelta(seconds=g, microseconds=k))}'"
            store.execute(f"INSERT INTO t VALUES ('{format_timestamp(T0 + timedelta(seconds=g))}', {n}, {ingested})")
            n += 1
    reader, cursor, seen, more = StoreReader(store), Cursor(), [], True
    top = T0 + timedelta(hours=1)
    while more:
        rows, cursor, more = await next_page(reader, SPEC, cursor, top, page)
        assert len(rows) <= max(page, 1)
        seen += [r[1] for r in rows]
    assert sorted(seen) == list(range(n))


def test_signal_key_is_ingested_at_else_stable_content_hash() -> None:
    """µs ISO key when ingested_at is known; the same 'h:' key for the same content otherwise."""
    row = [T0, "c", "Swing Trade", "A", 1.0, None, 1.0, 2.0, 3.0, 0.5, "", "forwarder", T0]
    assert signal_key(row) == "2025-10-11T12:00:00.000000Z"
    legacy = [*row[:-1], None]
    assert signal_key(legacy) == signal_key(list(legacy))
    assert signal_key(legacy).startswith("h:")
    assert signal_key([*legacy[:4], 9.0, *legacy[5:]]) != signal_key(legacy)


def test_row_hash_treats_nan_as_null_and_covers_deleted_at() -> None:
    """NaN and None hash alike (both read as null); deleting a row changes its hash."""
    base = [T0, "c", "Swing Trade", "A", math.nan, None, 1.0, 2.0, 3.0, 0.5, "", "forwarder", T0]
    assert row_hash([*base[:4], None, *base[5:]]) == row_hash(base)
    live, deleted = signal_row(base), signal_row(base, T0)
    assert live[5] is None  # buy_min
    assert live[-1] != deleted[-1]
    assert live[1] == deleted[1]


def test_hash_sum_is_order_independent() -> None:
    """The reconcile digest does not depend on row order."""
    hashes = [row_hash([i]) for i in range(10)]
    assert hash_sum(hashes) == hash_sum(list(reversed(hashes)))


def test_error_text_classification_not_sqlstate() -> None:
    """QuestDB's PG wire sends SQLSTATE 00000: the message text decides."""
    missing = classify_error("SELECT * FROM x", "table does not exist [table=tp_capital_signals]", 14)
    assert isinstance(missing, TableMissing)
    assert missing.table == "tp_capital_signals"
    assert isinstance(classify_error("SELECT", "Invalid column: foo", 7), QueryRejected)


def test_reconcile_due_after_the_scheduled_time_only() -> None:
    """Due once today's reconcile_at passed since the last run; never before a baseline exists."""
    settings = QuestdbSettings(reconcile_at="02:30")
    now = datetime(2025, 10, 11, 3, 0, tzinfo=UTC)
    assert not reconcile_due(settings, {}, now)
    assert reconcile_due(settings, {"reconcile": {"at": "2025-10-10T03:00:00.000000Z"}}, now)
    assert not reconcile_due(settings, {"reconcile": {"at": "2025-10-11T02:45:00.000000Z"}}, now)


def test_emulator_rejects_what_questdb_rejects() -> None:
    """OFFSET and DELETE are not QuestDB SQL; a missing table names itself at the token offset."""
    store = Store()
    for ddl in UPSTREAM_DDL:
        store.execute(ddl)
    with pytest.raises(SqlError, match="OFFSET"):
        store.execute("SELECT * FROM tp_capital_signals LIMIT 1 OFFSET 1")
    with pytest.raises(SqlError) as missing:
        store.execute("SELECT * FROM nope")
    assert (missing.value.message, missing.value.position) == ("table does not exist [table=nope]", 14)
    first = store.execute("SELECT * FROM tables()").rows
    store.execute("DROP TABLE telegram_bots")
    store.execute(UPSTREAM_DDL[2])
    second = store.execute("SELECT * FROM tables()").rows
    assert {r[1]: r[0] for r in first}["telegram_bots"] != {r[1]: r[0] for r in second}["telegram_bots"]
