"""Connections to PostgreSQL: one pool per process, orjson codecs, what counts as transient.

PostgreSQL restarting, failing over or killing a backend surfaces through asyncpg in many shapes
(a SQLSTATE of class 08 or 57, `InterfaceError('connection is closed')`, `InternalClientError(
'cannot switch to state …')` from a connection left mid-protocol, a bare OSError). `is_transient`
is the one place that knows them all; `borrowed` makes sure a connection that failed that way is
thrown away rather than handed to the next caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.exceptions import _base as asyncpg_base
from asyncpg.pool import PoolConnectionProxy

from syncd.config import PostgresSettings

APPLICATION_NAME = "syncd"

# SQLSTATE classes, never message text (messages are localizable). Unit-tested as one table.
TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58", "40"})
"""Connection exception, insufficient resources, operator intervention (shutdown, terminated
backend, cannot connect now, statement cancelled), system error, transaction rollback."""
TRANSIENT_CODES = frozenset({"55P03", "25P03"})
"""lock_not_available, idle_in_transaction_session_timeout."""
_NOT_TRANSIENT = (
    asyncpg_base.DataError,  # a value the codec cannot encode: the data is wrong, not the link
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
    asyncpg_base.UnsupportedServerFeatureError,
)
PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
"""Everything asyncpg raises about a query or its connection; `is_transient` sorts them."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying on a fresh connection may succeed: PostgreSQL or the link failed, not the data."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        return code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_CODES
    if isinstance(exc, _NOT_TRANSIENT):
        return False
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError)


@asynccontextmanager
async def borrowed(pool: asyncpg.Pool, timeout: float) -> AsyncIterator[PoolConnectionProxy]:
    """A pool connection for one unit of work, acquired and released within `timeout`.

    A connection the work failed on transiently (or that was cancelled mid-query) is terminated
    instead of going back to the pool, and the pool's other connections are expired: after a
    restart they are all dead, and the next caller must not be handed one.
    """
    conn = await pool.acquire(timeout=timeout)
    try:
        yield conn
    except BaseException as exc:
        if is_transient(exc) or isinstance(exc, asyncio.CancelledError):
            # A connection that died has already left its proxy: then there is nothing to terminate.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
            await pool.expire_connections()
        raise
    finally:
        await pool.release(conn, timeout=timeout)


Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""A connection of our own or one borrowed from the pool: both run the same queries."""


def _encode_jsonb(value: object) -> bytes:
    # jsonb's binary format is a version byte followed by the JSON text.
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Install binary orjson codecs so jsonb travels as Python objects, COPY included."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    await conn.set_type_codec("json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary")


async def connect(dsn: str, *, timeout: float = 5.0) -> asyncpg.Connection:
    """One connection with syncd's codecs (for the lease connection and one-shot commands)."""
    conn = await asyncpg.connect(dsn, timeout=timeout, server_settings={"application_name": APPLICATION_NAME})
    await init_connection(conn)
    return conn


async def create_pool(settings: PostgresSettings, *, min_size: int = 1) -> asyncpg.Pool:
    """The process's pool; sized by `postgres.pool_size`, every statement bounded by `command_timeout`.

    With `min_size=0` nothing connects here, so a pool can be made while PostgreSQL is down."""
    pool = await asyncpg.create_pool(
        settings.dsn.get_secret_value(),
        min_size=min(min_size, settings.pool_size),
        max_size=settings.pool_size,
        timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        init=init_connection,
        server_settings={"application_name": APPLICATION_NAME},
    )
    assert pool is not None
    return pool
