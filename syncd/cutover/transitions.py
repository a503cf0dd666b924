"""`promote`, `rollback` and `retire`: each checks its preconditions and changes the mode in ONE
transaction that holds the file's cutover row, so no LowDB batch and no other transition can
interleave. A refusal raises CutoverRefused with every reason and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncd import outbox
from syncd.config import LowdbSettings
from syncd.cutover import reverse
from syncd.cutover.state import MIRROR, PG_PRIMARY, RETIRED, CutoverState, lock, reverse_consumer, transition
from syncd.cutover.verify import FileParity, verify_file
from syncd.database import Connection
from syncd.errors import CutoverRefused, UnreadableFile
from syncd.lowdb.diff import read_file
from syncd.tables import specs_for_layout

ROLLBACK_ATTEMPTS = 3
"""Flush-and-verify rounds before a rollback gives up on PostgreSQL still being written."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a transition did, for the CLI to print."""

    name: str
    from_mode: str
    to_mode: str
    parity: FileParity | None = None
    written_back: int = 0


async def promote(pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str, max_lag: float) -> Outcome:
    """mirror → pg-primary: refused unless verify is clean, lag ≤ `max_lag` and nothing is quarantined."""
    await _settle(pool, settings, max_lag)
    async with pool.acquire() as conn, conn.transaction():
        state = await lock(conn, settings.name)
        _expect(state, MIRROR, "promote")
        parity = await verify_file(conn, settings)
        reasons = [*_parity_reasons(parity), *await _promote_blockers(conn, settings, parity.sha, max_lag)]
        if reasons:
            raise CutoverRefused(settings.name, reasons)
        await transition(conn, state, PG_PRIMARY, actor, "promote: verify clean")
        tables = [s.table for s in specs_for_layout(settings.layout, settings.collections)]
        await outbox.register(conn, reverse_consumer(settings.name), tables)
    return Outcome(settings.name, MIRROR, PG_PRIMARY, parity)


async def rollback(pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str) -> Outcome:
    """pg-primary → mirror: flush the reverse path, verify both sides equal, then switch."""
    async with pool.acquire() as conn, conn.transaction():
        state = await lock(conn, settings.name)
        _expect(state, PG_PRIMARY, "rollback")
        written, parity = await _flush_until_equal(conn, settings)
        if not parity.clean:
            reasons = _parity_reasons(parity)
            raise CutoverRefused(settings.name, [*reasons, "is PostgreSQL still being written? stop its writers first"])
        await transition(conn, state, MIRROR, actor, f"rollback: {written} record(s) flushed, verify clean")
        await outbox.drop(conn, reverse_consumer(settings.name))
    return Outcome(settings.name, PG_PRIMARY, MIRROR, parity, written)


async def retire(pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str, window: float) -> Outcome:
    """pg-primary → retired once `window` seconds have passed since the promote: the file is left as is."""
    async with pool.acquire() as conn, conn.transaction():
        state = await lock(conn, settings.name)
        _expect(state, PG_PRIMARY, "retire")
        age = time.time() - state.changed_at.timestamp()
        if age < window:
            raise CutoverRefused(
                settings.name, [f"pg-primary for {age / 3600:.1f} h, the rollback window is {window / 3600:.1f} h"]
            )
        written = await reverse.flush(conn, settings)
        await transition(conn, state, RETIRED, actor, f"retire: reverse path ended after {age / 3600:.1f} h")
        await outbox.drop(conn, reverse_consumer(settings.name))
    return Outcome(settings.name, PG_PRIMARY, RETIRED, None, written)


async def _settle(pool: asyncpg.Pool, settings: LowdbSettings, max_lag: float) -> None:
    """Give the daemon up to `max_lag` seconds to apply the file's current version (outside the lock,
    which would block that very batch)."""
    specs = specs_for_layout(settings.layout, settings.collections)
    deadline = time.monotonic() + max_lag
    while time.monotonic() < deadline:
        try:
            version = await asyncio.to_thread(read_file, settings.path, [s.collection for s in specs])
        except (UnreadableFile, OSError):
            return  # verify reports it, with the reason
        applied = await pool.fetchval(
            "SELECT position ->> 'sha' FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1", settings.name
        )
        if applied == version.position["sha"]:
            return
        await asyncio.sleep(0.1)


def _expect(state: CutoverState, mode: str, action: str) -> None:
    if state.mode != mode:
        raise CutoverRefused(state.name, [f"{action} needs mode {mode}, it is {state.mode}"])


async def _flush_until_equal(conn: Connection, settings: LowdbSettings) -> tuple[int, FileParity]:
    written = 0
    for _ in range(ROLLBACK_ATTEMPTS):
        written += await reverse.flush(conn, settings)
        parity = await verify_file(conn, settings)
        if parity.clean:
            break
    return written, parity


def _parity_reasons(parity: FileParity) -> list[str]:
    reasons = []
    for t in parity.tables:
        if not t.clean:
            detail = _listed(
                ("missing in PG", t.missing_in_pg),
                ("missing in the file", t.missing_in_source),
                ("different", t.differing),
                ("invalid in the file", t.invalid),
            )
            reasons.append(f"verify: {t.table} has {t.mismatched_rows} mismatching row(s) ({detail})")
    return reasons


def _listed(*kinds: tuple[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{label}: {', '.join(keys)}" for label, keys in kinds if keys)


async def _promote_blockers(conn: Connection, settings: LowdbSettings, sha: str, max_lag: float) -> list[str]:
    reasons = []
    position: dict[str, Any] | None = await conn.fetchval(
        "SELECT position FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1", settings.name
    )
    if position is None:
        reasons.append("syncd has never applied this file (is the daemon running?)")
    elif position.get("sha") != sha:
        lag = max(0.0, time.time() - settings.path.stat().st_mtime)
        reasons.append(f"lag: the file's version of {lag:.1f} s ago is not applied within {max_lag:g} s")
    held: int = await conn.fetchval(
        "SELECT count(*) FROM syncd.quarantine WHERE stream = $1 AND status = 'held'", settings.name
    )
    if held:
        reasons.append(f"quarantine: {held} record(s) held (syncd quarantine list --stream {settings.name})")
    if settings.layout == "generic":
        reasons.append("layout generic has no reverse path (syncd.documents is not change-captured)")
    return reasons
