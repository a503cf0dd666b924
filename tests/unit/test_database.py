"""What counts as transient: every shape asyncpg gives PostgreSQL restarting, failing over or killing a
backend retries; a value the data got wrong never does. One table, no server."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from syncd.database import is_transient
from syncd.errors import BatchRejected, SinkUnavailable
from syncd.sink.postgres import classify


def pg_error(sqlstate: str) -> asyncpg.PostgresError:
    """A driver exception carrying `sqlstate`, as asyncpg builds it from a server response."""
    error: asyncpg.PostgresError = asyncpg.PostgresError.new({"C": sqlstate, "M": "m", "S": "FATAL"})
    return error


TRANSIENT = [
    # Seen while `pg_ctl restart -m fast|immediate` and `pg_terminate_backend` ran under load:
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.InterfaceError("cannot call Connection.terminate(): connection has been released back to the pool"),
    asyncpg_base.ProtocolError("unexpected message"),
    pg_error("08003"),  # ConnectionDoesNotExistError: closed in the middle of an operation
    pg_error("08006"),  # connection failure
    pg_error("57P01"),  # AdminShutdown: terminating connection due to administrator command
    pg_error("57P02"),  # crash shutdown (a sibling backend died: immediate restart)
    pg_error("57P03"),  # CannotConnectNow: starting up / shutting down
    pg_error("57014"),  # statement cancelled
    pg_error("53300"),  # too many connections
    pg_error("40001"),  # serialization failure
    pg_error("55P03"),  # lock not available
    pg_error("25P03"),  # idle-in-transaction timeout
    ConnectionRefusedError(111, "Connect call failed"),
    ConnectionResetError(),
    TimeoutError(),
]
NOT_TRANSIENT = [
    asyncpg_base.DataError("invalid input for query argument $1: 'x' (an integer is required)"),
    asyncpg_base.ClientConfigurationError("bad sslmode"),
    pg_error("23505"),  # unique violation
    pg_error("22021"),  # character not in repertoire (a NUL)
    pg_error("42P01"),  # undefined table
    pg_error("28P01"),  # wrong password: a config error, not an outage
    ValueError("not a driver error"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=repr)
def test_transient(exc: BaseException) -> None:
    """Retry on a fresh connection, and the sink reports it as SinkUnavailable."""
    assert is_transient(exc)
    assert isinstance(classify(exc, stream="s"), SinkUnavailable)


@pytest.mark.parametrize("exc", NOT_TRANSIENT, ids=repr)
def test_not_transient(exc: BaseException) -> None:
    """Retrying would meet the same answer: the data, the schema or the config is wrong."""
    assert not is_transient(exc)


def test_a_value_the_codec_refuses_rejects_the_batch() -> None:
    """asyncpg's client-side DataError (an InterfaceError) is the data's fault: rejected, not retried."""
    rejected = classify(asyncpg_base.DataError("invalid input"), stream="s", table="t")
    assert isinstance(rejected, BatchRejected)
    assert rejected.sqlstate == "22000"
