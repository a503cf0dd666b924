"""Shared fixtures: one real PostgreSQL per test session, one migrated database per test, and the
real QuestDB servers (started on first use, once per session).

`SYNCD_TEST_DSN` points at an existing server (any database; tests create their own); otherwise
a throwaway cluster is started with the system's binaries and removed afterwards. QuestDB is the
jar `make tools` fetched: `QUESTDB_SUITE` for every QuestDB test, `QUESTDB_LATEST` only where a test
asks for it (the end-to-end test and the server facts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from syncd.cluster import temporary_database, throwaway_server, with_database
from syncd.database import connect, init_connection
from syncd.migrate import migrate
from tests.kafka_broker import KafkaBroker
from tests.questdb_server import QUESTDB_LATEST, QUESTDB_SUITE, QuestdbServer, start_questdb
from tests.questdb_upstream import Upstream

TEMPLATE_DB = "syncd_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a server the tests may create databases on."""
    with throwaway_server(os.environ.get("SYNCD_TEST_DSN"), "syncd-test-pg-") as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    """One real Kafka broker for the test session (started on first use), stopped at the end."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.format()
    broker.start()
    try:
        await broker.until_ready()
        yield broker
    finally:
        broker.stop()


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


@pytest.fixture(scope="session")
def questdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuestdbServer]:
    """QuestDB of the line upstream runs, for the whole session."""
    with start_questdb(QUESTDB_SUITE, Path(tmp_path_factory.mktemp("questdb-suite"))) as server:
        yield server


@pytest.fixture(scope="session")
def questdb_latest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuestdbServer]:
    """The current QuestDB release, started only for the tests that ask for it."""
    with start_questdb(QUESTDB_LATEST, Path(tmp_path_factory.mktemp("questdb-latest"))) as server:
        yield server


@pytest.fixture
async def questdb(questdb_server: QuestdbServer) -> AsyncIterator[Upstream]:
    """Upstream's tables created afresh on the session's server, and a writer that writes like upstream."""
    async with Upstream(questdb_server.http_port) as upstream:
        await upstream.reset()
        yield upstream


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level
        logging.captureWarnings(False)
        structlog.reset_defaults()
