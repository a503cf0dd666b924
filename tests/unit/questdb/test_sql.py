"""Unit tests: the cursor and the SQL the QuestDB poller builds, keys and hashes, error mapping."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

import orjson
from hypothesis import given
from hypothesis import strategies as st

from syncd.config import QuestdbSettings
from syncd.errors import QueryRejected, TableMissing
from syncd.questdb.reader import classify_error
from syncd.questdb.reconcile import reconcile_due
from syncd.questdb.sql import (
    PageSpec,
    canonical,
    group_query,
    hash_sum,
    range_query,
    row_hash,
    signal_key,
    signal_row,
    signal_row_text,
)

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


def _reference(values: list[object]) -> bytes:
    """The canonical form as first defined (per value: datetime → strftime text, NaN/±Inf → None):
    stored row hashes were computed this way, so the fast path must give the same bytes."""
    def one(v: object) -> object:
        if isinstance(v, datetime):
            return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    return orjson.dumps([one(v) for v in values])


@given(st.lists(st.one_of(st.none(), st.floats(), st.integers(-2**62, 2**62), st.text(),
                          st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                                       timezones=st.just(UTC))), max_size=14))
def test_canonical_row_is_the_stored_hash_definition(values: list[object]) -> None:
    """Any row (UTC timestamps as the readers give them, NaN, ±Inf, None) canonicalises as before."""
    assert canonical(values) == _reference(values)
    assert row_hash(values) == blake2b(_reference(values), digest_size=16).digest()


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), min_size=6, max_size=6),
       st.text(), st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.one_of(st.none(), st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                                         timezones=st.just(UTC))))
def test_signal_row_from_exec_text_equals_signal_row(doubles: list[float | None], text: str, ts: datetime,
                                                     ingested: datetime | None) -> None:
    """The backfill's text path gives the PG row the datetime path gives, key and hash included."""
    values = [ts, "@TPCapital_Oficial", None, text, *doubles, text, "forwarder", ingested]
    as_sent = orjson.loads(orjson.dumps([v.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(v, datetime) else v
                                         for v in values]))
    assert signal_row_text(as_sent, values) == signal_row(values)
