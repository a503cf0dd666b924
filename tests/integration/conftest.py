"""Fixtures for integration tests: a sink on the test database, a stream driver, a polling wait, a session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from syncd.sink.postgres import PostgresSink
from syncd.source import Source
from syncd.stream import StreamRunner


@pytest.fixture
async def sink(pool: asyncpg.Pool) -> PostgresSink:
    """A sink holding the current leader epoch."""
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    return PostgresSink(pool, epoch)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value, failing with `what` at the deadline.

    The default deadline is generous on purpose: a passing check returns at once, and a 2-core CI
    machine running QuestDB, Kafka and PostgreSQL beside the suite can take seconds per round."""
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


@asynccontextmanager
async def session(dsn: str, setup: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection that ran `setup` first (`SET ROLE …`, `SET syncd.origin = …`), closed afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup)
        yield conn
    finally:
        await conn.close()
