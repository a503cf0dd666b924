"""The sink's SQLSTATE classification table and key dedupe, without a server."""

from __future__ import annotations

import asyncpg
import pytest

from syncd.errors import BatchRejected, Fenced, ModeChanged, SinkUnavailable
from syncd.sink.postgres import classify, dedupe


def pg_error(sqlstate: str) -> asyncpg.PostgresError:
    """A driver exception carrying `sqlstate`, as asyncpg builds it from a server response."""
    error: asyncpg.PostgresError = asyncpg.PostgresError.new({"C": sqlstate, "M": "m", "S": "ERROR"})
    return error


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", SinkUnavailable),  # connection failure
        ("57P01", SinkUnavailable),  # admin shutdown (PG restart)
        ("40001", SinkUnavailable),  # serialization failure
        ("40P01", SinkUnavailable),  # deadlock
        ("53300", SinkUnavailable),  # too many connections
        ("55P03", SinkUnavailable),  # lock not available
        ("SY001", Fenced),
        ("SY002", ModeChanged),  # the file was promoted: stop the forward stream
        ("23505", BatchRejected),  # unique violation
        ("23514", BatchRejected),  # check violation
        ("21000", BatchRejected),  # cardinality violation
        ("22P02", BatchRejected),  # invalid text representation
    ],
)
def test_classification_by_sqlstate(sqlstate: str, expected: type[Exception]) -> None:
    """Class 08/40/53/57 retry, SY001 fences, SY002 stops a promoted file, data errors reject: never by message text."""
    assert isinstance(classify(pg_error(sqlstate), stream="s"), expected)


def test_lost_connection_is_transient() -> None:
    """A dropped socket is retried like SQLSTATE class 08."""
    assert isinstance(classify(ConnectionResetError(), stream="s"), SinkUnavailable)
    assert isinstance(classify(asyncpg.InterfaceError("connection is closed"), stream="s"), SinkUnavailable)


def test_dedupe_keeps_the_last_row_per_key_in_first_seen_order() -> None:
    """Last version wins so ON CONFLICT never meets a key twice (SQLSTATE 21000)."""
    rows = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 3)]
    assert dedupe(rows, [0]) == [("a", 2), ("b", 3), ("c", 1)]
    pairs = [("x", "1", 1), ("x", "2", 1), ("x", "1", 9)]
    assert dedupe(pairs, [0, 1]) == [("x", "1", 9), ("x", "2", 1)]
