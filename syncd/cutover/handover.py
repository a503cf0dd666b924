"""The handshake inside `promote` and `rollback`: syncd flips a file's mode only once every connected
cutover client has stopped writing the old store.

Each client holds `syncd.writer_lock_key(file, store)` shared while it may write `store` ('lowdb' or
'pg'). The handover enters `switching` (or `switching-back`), which every client hears through
LISTEN/NOTIFY (or its poll): it holds new writes, lets those in flight finish, acknowledges the
handover in its registry row and releases the lock. The handover takes the same lock exclusively, so
it is granted exactly when the last client let go; no timer decides it. A lock not granted within
the timeout, or a client whose session ended without acknowledging (it lost PostgreSQL mid-handover
and a write of it may still be landing), aborts: the file returns to the mode it came from.

One session runs the whole transition and holds the file's `handover` lock, so two transitions of
one file never interleave, and a handover whose command died (its session, and so that lock, gone)
is found orphaned and returned to its old mode by the next command or by the daemon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from syncd.cutover import clients
from syncd.cutover.state import HANDOVER_MODES, Mode, lock, transition
from syncd.database import Connection
from syncd.errors import CutoverRefused, HandoverAborted

BOUND_SHARE = 0.8
"""The share of the shortest client hold bound a handover may take."""


@dataclass(frozen=True, slots=True)
class Handover:
    """One handover in progress: which store's writers must stop, and by when."""

    name: str
    id: int
    from_mode: Mode
    via: Mode
    store: str
    clients: tuple[str, ...]
    """The clients connected when it began: each must acknowledge it or still be connected."""
    timeout: float
    deadline: float

    def remaining(self) -> float:
        """Seconds left before the handover aborts (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


async def take(session: Connection, name: str, actor: str) -> None:
    """Hold the file's transition lock for this session, refusing while another transition runs;
    a handover left behind by a command that died is returned to its old mode first."""
    if not await session.fetchval("SELECT pg_try_advisory_lock(syncd.writer_lock_key($1, 'handover'))", name):
        raise CutoverRefused(name, ["another cutover command for this file is running"])
    await recover_orphan(session, name, actor)


async def release(session: Connection) -> None:
    """Release every lock the transition's session holds (it goes back to the pool)."""
    await session.execute("SELECT pg_advisory_unlock_all()")


async def recover_orphan(conn: Connection, name: str, actor: str) -> Mode | None:
    """Return a handover nobody runs any more to the mode it came from; that mode, or None."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(syncd.writer_lock_key($1, 'handover'))", name):
            return None  # a live command runs it
        state = await lock(conn, name)
        if state.mode not in HANDOVER_MODES or state.handover_from is None:
            return None
        reason = f"handover {state.handover_id} orphaned (the command running it ended): back to {state.handover_from}"
        await transition(conn, state, state.handover_from, actor, reason)
        return state.handover_from


async def begin(session: Connection, name: str, via: Mode, store: str, actor: str, timeout: float) -> Handover:
    """Enter `via` (the clients start holding writes); the timeout is capped below the shortest client hold
    bound, so syncd gives up (and the held writes go back to the old store) before any client fails one."""
    present = await clients.connected(session, name)
    bound = min([timeout, *(BOUND_SHARE * c.hold_bound_ms / 1000 for c in present)])
    async with session.transaction():
        state = await lock(session, name)
        reason = f"handover started: {len(present)} client(s) stop writing {store} within {bound:g} s"
        entered = await transition(session, state, via, actor, reason)
    return Handover(
        name, entered.handover_id, state.mode, via, store, tuple(c.id for c in present), bound, time.monotonic() + bound
    )


async def stop_writers(session: Connection, handover: Handover) -> float:
    """Wait until no client may write the old store (its writers' lock, exclusively); seconds waited.

    Raises HandoverAborted on the timeout, or when a client lost its session without acknowledging.
    """
    started = time.monotonic()
    millis = max(1, int(handover.remaining() * 1000))
    await session.execute("SELECT set_config('lock_timeout', $1, false)", f"{millis}ms")
    try:
        await session.execute("SELECT pg_advisory_lock(syncd.writer_lock_key($1, $2))", handover.name, handover.store)
    except asyncpg.LockNotAvailableError:
        writing = [c.label for c in await clients.connected(session, handover.name) if c.writes == handover.store]
        raise HandoverAborted(
            handover.name,
            f"clients still writing {handover.store} after {handover.timeout:g} s: {', '.join(writing) or 'unknown'}",
        ) from None
    finally:
        await session.execute("RESET lock_timeout")
    lost = await clients.unacknowledged(session, handover.name, handover.clients, handover.id)
    if any(not c.connected for c in lost):
        labels = ", ".join(c.label for c in lost if not c.connected)
        raise HandoverAborted(handover.name, f"{labels} lost PostgreSQL mid-handover before it stopped writing")
    return time.monotonic() - started


async def abort(session: Connection, handover: Handover, actor: str, why: str) -> None:
    """Return the file to the mode the handover came from (unless something else already moved it)."""
    async with session.transaction():
        state = await lock(session, handover.name)
        if state.mode == handover.via and state.handover_id == handover.id:
            await transition(session, state, handover.from_mode, actor, f"handover {handover.id} aborted: {why}")
