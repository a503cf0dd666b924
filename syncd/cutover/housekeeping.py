"""An instance's periodic chores: parity of the LowDB files it owns for `syncd_verify_mismatch_rows`,
outbox and cutover client registry pruning (idempotent, so every instance may run them).

Parity is only measured on a settled file (mirror: PostgreSQL has applied the version on disk;
pg-primary: the reverse path has no backlog), so a change in flight never raises a false alarm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import asyncpg
import structlog

from syncd import outbox
from syncd.config import LowdbSettings
from syncd.cutover import clients
from syncd.cutover.state import FORWARD_MODES, PG_PRIMARY, Mode, reverse_consumer
from syncd.cutover.verify import FileParity, record_metrics, verify_file
from syncd.database import PG_ERRORS, Connection, borrowed
from syncd.errors import UnreadableFile
from syncd.lowdb.reader import read_version
from syncd.tables import specs_for

log = structlog.get_logger(__name__)

PRUNE_SECONDS = 60.0
ERRORS = (UnreadableFile, *PG_ERRORS)
ACQUIRE_TIMEOUT = 10.0


async def verify_settled(conn: Connection, entry: LowdbSettings, mode: Mode) -> FileParity | None:
    """Parity of a settled file, or None while a change is in flight (or the file is retired)."""
    specs = specs_for(entry)
    version = await asyncio.to_thread(read_version, entry.path, specs)
    if mode in FORWARD_MODES:
        applied = await conn.fetchval(
            "SELECT position ->> 'sha' FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1", entry.name
        )
        if applied != version.position["sha"]:
            return None
    elif mode != PG_PRIMARY or await outbox.pending(conn, reverse_consumer(entry.name)):
        return None
    return await verify_file(conn, entry, version)


class Housekeeping:
    """Runs the chores in one background task when due; never blocks the daemon's tick."""

    def __init__(self, pool: asyncpg.Pool, entries: Sequence[LowdbSettings], verify_interval: float) -> None:
        self._pool = pool
        self._entries = entries
        self._verify_interval = verify_interval
        self._next_verify = time.monotonic() + min(verify_interval, 5.0)
        self._next_prune = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def tick(self, modes: Mapping[str, Mode]) -> None:
        """Start the due chores unless the previous round is still running."""
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        verify = bool(self._verify_interval) and now >= self._next_verify
        prune = now >= self._next_prune
        if verify:
            self._next_verify = now + self._verify_interval
        if prune:
            self._next_prune = now + PRUNE_SECONDS
        if verify or prune:
            self._task = asyncio.create_task(self._round(dict(modes), verify=verify, prune=prune), name="housekeeping")

    async def close(self) -> None:
        """Cancel a round in flight (it only reads, or deletes settled outbox rows)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _round(self, modes: dict[str, Mode], *, verify: bool, prune: bool) -> None:
        try:
            async with borrowed(self._pool, ACQUIRE_TIMEOUT) as conn:
                if prune:
                    pruned = await outbox.prune(conn)
                    if pruned:
                        log.info("outbox pruned", rows=pruned)
                    gone = await clients.prune(conn)
                    if gone:
                        log.info("cutover clients gone for a day forgotten", clients=gone)
                if verify:
                    await self._verify(conn, modes)
        except ERRORS as exc:
            log.warning("housekeeping round failed; next round retries", error=repr(exc))

    async def _verify(self, conn: Connection, modes: Mapping[str, Mode]) -> None:
        parities = []
        for entry in self._entries:
            if entry.name not in modes:  # another instance owns this file and checks it
                continue
            parity = await verify_settled(conn, entry, modes[entry.name])
            if parity is not None:
                parities.append(parity)
                if not parity.clean:
                    log.warning("verify mismatch", stream=entry.name, rows=parity.mismatched_rows)
        record_metrics(parities)
