"""`shadow`, `promote`, `rollback` and `retire`.

`promote` and `rollback` run a handover (syncd/cutover/handover.py): the file enters `switching`
(`switching-back`), every connected cutover client stops writing the old store, then syncd applies
the file's last version (flushes the reverse path), verifies and flips, in ONE transaction holding
the file's cutover row, so no LowDB batch and no other transition can interleave. A refusal before
the handover raises CutoverRefused with every reason and changes nothing; a handover that cannot
complete (timeout, a client lost, verify not clean once the writes stopped) returns the file to the
mode it came from, logged, and raises CutoverRefused too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncd import outbox
from syncd.config import LowdbSettings
from syncd.cutover import clients, handover, reverse
from syncd.cutover.state import (
    MIRROR,
    PG_PRIMARY,
    RETIRED,
    SHADOW,
    SWITCHING,
    SWITCHING_BACK,
    CutoverState,
    Mode,
    lock,
    reverse_consumer,
    transition,
)
from syncd.cutover.verify import FileParity, verify_file
from syncd.database import Connection
from syncd.errors import CutoverRefused, HandoverAborted, UnreadableFile
from syncd.lowdb.reader import read_version
from syncd.tables import specs_for

ROLLBACK_ATTEMPTS = 3
"""Flush-and-verify rounds before a rollback gives up on PostgreSQL still being written."""
HANDOVER_TIMEOUT = 2.0
"""Default bound of a handover: the clients' writes are held at most this long."""
SETTLE_POLL = 0.02
"""How often a promote looks whether the daemon applied the file's last version: inside a handover
every poll interval is time the clients' writes are held."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a transition did, for the CLI to print."""

    name: str
    from_mode: str
    to_mode: str
    parity: FileParity | None = None
    written_back: int = 0
    clients: int = 0
    """Cutover clients that took part in the handover."""
    handover_seconds: float | None = None
    """From entering the handover mode to the flip."""


async def shadow(pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str) -> Outcome:
    """mirror → shadow: the clients keep serving LowDB and also read PostgreSQL and compare."""
    async with _session(pool, settings.name, actor) as session, session.transaction():
        state = await lock(session, settings.name)
        _expect(state, (MIRROR,), "shadow")
        await transition(session, state, SHADOW, actor, "shadow: reads compared with PostgreSQL")
    return Outcome(settings.name, MIRROR, SHADOW)


async def promote(
    pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str, max_lag: float, timeout: float = HANDOVER_TIMEOUT
) -> Outcome:
    """mirror|shadow → pg-primary: refused unless verify is clean, lag ≤ `max_lag`, nothing is quarantined
    and no client's shadow reads disagree; then the handover stops the clients' LowDB writes, and the
    file's last version is applied and verified before the flip."""
    async with _session(pool, settings.name, actor) as session:
        present = await clients.connected(session, settings.name)
        origin = await _promote_checks(pool, session, settings, max_lag, quiet=not present)
        flipped = await _handover(
            session, settings.name, SWITCHING, "lowdb", actor, timeout, _promote_flip(pool, settings, actor)
        )
        parity, taken, seconds = flipped
    return Outcome(settings.name, origin, PG_PRIMARY, parity, clients=taken, handover_seconds=seconds)


async def rollback(
    pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str, timeout: float = HANDOVER_TIMEOUT
) -> Outcome:
    """pg-primary → mirror (the handover stops the clients' PG writes, the reverse path is flushed and
    both sides verified equal before the flip); shadow → mirror needs no handover."""
    async with _session(pool, settings.name, actor) as session:
        async with session.transaction():
            state = await lock(session, settings.name)
            _expect(state, (PG_PRIMARY, SHADOW), "rollback")
            if state.mode == SHADOW:
                await transition(session, state, MIRROR, actor, "rollback: shadow ended")
                return Outcome(settings.name, SHADOW, MIRROR)
        flip = _rollback_flip(settings, actor)
        (parity, written), taken, seconds = await _handover(
            session, settings.name, SWITCHING_BACK, "pg", actor, timeout, flip
        )
    return Outcome(settings.name, PG_PRIMARY, MIRROR, parity, written, taken, seconds)


async def retire(pool: asyncpg.Pool, settings: LowdbSettings, *, actor: str, window: float) -> Outcome:
    """pg-primary → retired once `window` seconds have passed since the promote: the file is left as is."""
    async with _session(pool, settings.name, actor) as session, session.transaction():
        state = await lock(session, settings.name)
        _expect(state, (PG_PRIMARY,), "retire")
        age = time.time() - state.changed_at.timestamp()
        if age < window:
            raise CutoverRefused(
                settings.name, [f"pg-primary for {age / 3600:.1f} h, the rollback window is {window / 3600:.1f} h"]
            )
        written = await reverse.flush(session, settings)
        await transition(session, state, RETIRED, actor, f"retire: reverse path ended after {age / 3600:.1f} h")
        await outbox.drop(session, reverse_consumer(settings.name))
    return Outcome(settings.name, PG_PRIMARY, RETIRED, None, written)


@asynccontextmanager
async def _session(pool: asyncpg.Pool, name: str, actor: str) -> AsyncIterator[Connection]:
    """A connection holding the file's transition lock for the whole command."""
    async with pool.acquire() as session:
        try:
            await handover.take(session, name, actor)
            yield session
        finally:
            await handover.release(session)


Flip = Callable[[Connection, handover.Handover], Awaitable[Any]]


async def _handover(
    session: Connection, name: str, via: Mode, store: str, actor: str, timeout: float, flip: Flip
) -> tuple[Any, int, float]:
    """Enter `via`, wait for the clients to stop writing `store`, then `flip` (it raises CutoverRefused
    to abort); what `flip` returned, the clients that took part and the seconds the handover took."""
    ongoing = await handover.begin(session, name, via, store, actor, timeout)
    try:
        await handover.stop_writers(session, ongoing)
        result = await flip(session, ongoing)
    except HandoverAborted as exc:
        await handover.abort(session, ongoing, actor, exc.reason)
        raise CutoverRefused(name, [f"handover aborted, back in {ongoing.from_mode}: {exc.reason}"]) from exc
    except CutoverRefused as exc:
        await handover.abort(session, ongoing, actor, "; ".join(exc.reasons))
        raise CutoverRefused(name, [f"handover aborted, back in {ongoing.from_mode}:", *exc.reasons]) from exc
    return result, len(ongoing.clients), ongoing.timeout - ongoing.remaining()


async def _promote_checks(
    pool: asyncpg.Pool, session: Connection, settings: LowdbSettings, max_lag: float, *, quiet: bool
) -> Mode:
    """Every reason to refuse before the handover; the mode the promote starts from.

    With no client connected the file may be written by anything, so it must be applied and verified
    first, as before; with clients, their writes stop in the handover and parity is checked then.
    """
    if quiet:
        await _settle(pool, settings, max_lag)
    async with session.transaction():
        state = await lock(session, settings.name)
        _expect(state, (MIRROR, SHADOW), "promote")
        reasons = await _static_blockers(session, settings)
        if state.mode == SHADOW:
            reasons += await clients.shadow_mismatches(session, settings.name, state.changed_at)
        if quiet:
            parity = await verify_file(session, settings)
            reasons = [*_parity_reasons(parity), *reasons, *await _lag_reasons(session, settings, parity.sha, max_lag)]
    if reasons:
        raise CutoverRefused(settings.name, reasons)
    return state.mode


def _promote_flip(pool: asyncpg.Pool, settings: LowdbSettings, actor: str) -> Flip:
    async def flip(session: Connection, ongoing: handover.Handover) -> FileParity:
        # No client writes the file any more: wait for the daemon to apply its last version.
        await _settle(pool, settings, ongoing.remaining())
        async with session.transaction():
            state = await lock(session, settings.name)
            parity = await verify_file(session, settings)
            reasons = [*_parity_reasons(parity), *await _lag_reasons(session, settings, parity.sha, ongoing.timeout)]
            if reasons:
                raise CutoverRefused(settings.name, reasons)
            await transition(session, state, PG_PRIMARY, actor, "promote: clients stopped writing LowDB, verify clean")
            tables = [s.table for s in specs_for(settings)]
            await outbox.register(session, reverse_consumer(settings.name), tables)
        return parity

    return flip


def _rollback_flip(settings: LowdbSettings, actor: str) -> Flip:
    async def flip(session: Connection, _ongoing: handover.Handover) -> tuple[FileParity, int]:
        async with session.transaction():
            state = await lock(session, settings.name)
            written, parity = await _flush_until_equal(session, settings)
            if not parity.clean:
                reasons = _parity_reasons(parity)
                raise CutoverRefused(
                    settings.name, [*reasons, "is PostgreSQL still being written? stop its writers first"]
                )
            await transition(session, state, MIRROR, actor, f"rollback: {written} record(s) flushed, verify clean")
            await outbox.drop(session, reverse_consumer(settings.name))
        return parity, written

    return flip


async def _settle(pool: asyncpg.Pool, settings: LowdbSettings, max_lag: float) -> None:
    """Give the daemon up to `max_lag` seconds to apply the file's current version (outside the lock,
    which would block that very batch)."""
    specs = specs_for(settings)
    deadline = time.monotonic() + max_lag
    while time.monotonic() < deadline:
        try:
            version = await asyncio.to_thread(read_version, settings.path, specs)
        except (UnreadableFile, OSError):
            return  # verify reports it, with the reason
        applied = await pool.fetchval(
            "SELECT position ->> 'sha' FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1", settings.name
        )
        if applied == version.position["sha"]:
            return
        await asyncio.sleep(SETTLE_POLL)


def _expect(state: CutoverState, modes: tuple[Mode, ...], action: str) -> None:
    if state.mode not in modes:
        raise CutoverRefused(state.name, [f"{action} needs mode {' or '.join(modes)}, it is {state.mode}"])


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


async def _lag_reasons(conn: Connection, settings: LowdbSettings, sha: str, max_lag: float) -> list[str]:
    position: dict[str, Any] | None = await conn.fetchval(
        "SELECT position FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1", settings.name
    )
    if position is not None and position.get("sha") != sha:
        lag = max(0.0, time.time() - settings.path.stat().st_mtime)
        return [f"lag: the file's version of {lag:.1f} s ago is not applied within {max_lag:g} s"]
    return []


async def _static_blockers(conn: Connection, settings: LowdbSettings) -> list[str]:
    reasons = []
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM syncd.checkpoints WHERE source = 'lowdb' AND stream = $1)", settings.name
    ):
        reasons.append("syncd has never applied this file (is the daemon running?)")
    held: int = await conn.fetchval(
        "SELECT count(*) FROM syncd.quarantine WHERE stream = $1 AND status = 'held'", settings.name
    )
    if held:
        reasons.append(f"quarantine: {held} record(s) held (syncd quarantine list --stream {settings.name})")
    if settings.layout == "generic":
        reasons.append("layout generic has no reverse path (syncd.documents is not change-captured)")
    return reasons
