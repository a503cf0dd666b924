"""Shared fixtures: one real PostgreSQL per test session, one migrated database per test.

`SYNCD_TEST_DSN` points at an existing server (any database; tests create their own); otherwise
a throwaway cluster is started with the system's binaries and removed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from syncd.cluster import temporary_database, throwaway_server, with_database
from syncd.database import connect, init_connection
from syncd.migrate import migrate

TEMPLATE_DB = "syncd_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a server the tests may create databases on."""
    with throwaway_server(os.environ.get("SYNCD_TEST_DSN"), "syncd-test-pg-") as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def template_dsn(pg_server: str) -> str:
    """A database with every migration applied, cloned for each test."""
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    dsn = with_database(pg_server, TEMPLATE_DB)
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def dsn(pg_server: str, template_dsn: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database of the test's own; dropped afterwards."""
    async with temporary_database(pg_server, "t", template=TEMPLATE_DB) as url:
        yield url


@pytest.fixture
async def empty_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    async with temporary_database(pg_server, "e") as url:
        yield url


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database with syncd's codecs."""
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=init_connection)
    assert p is not None
    try:
        yield p
    finally:
        await p.close()
