"""Connections to PostgreSQL: one pool per process, orjson codecs for json/jsonb."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from syncd.config import PostgresSettings

APPLICATION_NAME = "syncd"

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
    """The process's pool; sized by `postgres.pool_size`."""
    pool = await asyncpg.create_pool(
        settings.dsn.get_secret_value(),
        min_size=min(min_size, settings.pool_size),
        max_size=settings.pool_size,
        timeout=settings.connect_timeout,
        init=init_connection,
        server_settings={"application_name": APPLICATION_NAME},
    )
    assert pool is not None
    return pool
