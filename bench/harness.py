"""What every bench scenario shares: a PostgreSQL, fresh migrated databases, timing."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import asyncpg

from syncd.cluster import temporary_database, throwaway_server
from syncd.database import connect, init_connection
from syncd.migrate import migrate


@dataclass(frozen=True, slots=True)
class Measure:
    """One line of the bench table."""

    scenario: str
    method: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds else float("inf")


@contextmanager
def server() -> Iterator[str]:
    """SYNCD_BENCH_DSN if set, else a throwaway cluster removed afterwards."""
    with throwaway_server(os.environ.get("SYNCD_BENCH_DSN"), "syncd-bench-pg-") as dsn:
        yield dsn


@asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    """A new database with every migration applied; dropped afterwards."""
    async with temporary_database(server_dsn, "bench") as dsn:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn


async def make_pool(dsn: str, size: int = 2) -> asyncpg.Pool:
    """A pool with syncd's codecs."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=init_connection)
    assert pool is not None
    return pool


class Stopwatch:
    """Accumulates wall time over several timed sections."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Time the enclosed block."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
