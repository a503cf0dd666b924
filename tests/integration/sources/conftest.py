"""Fixtures for the QuestDB source: the emulator, settings pointing at it, a sink, a stream driver."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from syncd.config import QuestdbSettings
from syncd.sink.postgres import PostgresSink
from syncd.sources import Source
from syncd.stream import StreamRunner
from tests.fakes.questdb import UPSTREAM_DDL, QuestDBEmulator


@pytest.fixture
async def questdb() -> AsyncIterator[QuestDBEmulator]:
    """A running emulator with upstream's tables."""
    emulator = QuestDBEmulator()
    for ddl in UPSTREAM_DDL:
        emulator.run_sql(ddl)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
        assert_questdb_valid(emulator.queries)


def assert_questdb_valid(queries: list[str]) -> None:
    """Every query syncd sent is one QuestDB accepts and PostgreSQL accepts too (no OFFSET, LIMIT a,b)."""
    for sql in queries:
        assert not re.search(r"\bOFFSET\b", sql, re.I), sql
        assert not re.search(r"\bLIMIT\s+-?\d+\s*,", sql, re.I), sql
        assert "systimestamp" not in sql.lower(), sql
        assert "token" not in sql.lower(), sql


@pytest.fixture
def settings(questdb: QuestDBEmulator) -> QuestdbSettings:
    """Fast polling against the emulator; small pages so page boundaries are exercised."""
    return QuestdbSettings(http_port=questdb.port, poll_interval=0.05, safety_lag=0.0, lag_window=3600,
                           rescan_interval=0.2, page_size=5, request_timeout=1.0)


@pytest.fixture
async def sink(pool: asyncpg.Pool) -> PostgresSink:
    """A sink holding the current leader epoch."""
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    return PostgresSink(pool, epoch)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value, failing with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last {value!r}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(source: Source, sink: PostgresSink) -> AsyncIterator[StreamRunner]:
    """The source streaming into the sink through the real StreamRunner, stopped afterwards."""
    runner = StreamRunner(source, sink)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        await runner.stop(task, 5.0)
