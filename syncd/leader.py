"""Leadership: a PostgreSQL session advisory lock plus a fencing epoch bumped on every takeover."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from syncd import metrics
from syncd.database import connect

log = structlog.get_logger(__name__)

# pg_advisory_lock key for "the active syncd instance" ('syncdldr' as an int8).
LOCK_KEY = 0x73796E63646C6472


class Leadership:
    """Holds the leader lock on a dedicated connection; losing that connection loses the lock."""

    def __init__(self, dsn: str, instance: str, *, poll: float = 1.0, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._instance = instance
        self._poll = poll
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self.epoch: int | None = None

    @property
    def is_leader(self) -> bool:
        """True while the lock connection is open and the lock was taken."""
        return self.epoch is not None and self._conn is not None and not self._conn.is_closed()

    async def acquire(self) -> int:
        """Wait until this instance holds the lock, then bump and return the fencing epoch."""
        while True:
            try:
                epoch = await self._try_acquire()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("leader lock attempt failed", error=str(exc))
                await self._drop_connection()
                epoch = None
            if epoch is not None:
                return epoch
            await asyncio.sleep(self._poll)

    async def _try_acquire(self) -> int | None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._dsn, timeout=self._timeout)
        if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            return None
        self.epoch = int(
            await self._conn.fetchval(
                """UPDATE syncd.leader SET epoch = epoch + 1, holder = $1, acquired_at = now()
                    WHERE id = 1 RETURNING epoch""",
                self._instance,
            )
        )
        metrics.LEADER.set(1)
        log.info("became leader", epoch=self.epoch, instance=self._instance)
        return self.epoch

    async def alive(self) -> bool:
        """Probe the lock connection; False means leadership is gone (the server dropped the lock)."""
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), self._timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    async def release(self) -> None:
        """Give the lock back and close the lock connection."""
        if self._conn is not None and not self._conn.is_closed() and self.epoch is not None:
            try:
                await self._conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("could not unlock; closing the session releases it")
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        self.epoch = None
        metrics.LEADER.set(0)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), self._timeout)
        except (Exception, asyncio.CancelledError):
            conn.terminate()
            raise
