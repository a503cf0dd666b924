"""Per-stream ownership: the streams spread over the live instances, each under a lease of its own.

A lease is a PostgreSQL session advisory lock per stream plus a fencing epoch in
`syncd.stream_leases` that every new holder bumps; the sink checks it in each apply transaction
(`syncd.fence_stream`), so a deposed owner's batch aborts instead of committing. Membership is
a lock too: an instance is alive while its member lock is held, and PostgreSQL drops every lock
of a session that ends, so a killed instance's streams are free the moment its connection closes.

Every instance computes the same assignment from the same inputs (the stream names, the live
members) and only ever takes a free lock: rebalancing is each instance releasing what the
assignment gives to others and taking what it gives to itself, nothing is coordinated beyond that.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b

import asyncpg
import structlog

from syncd import metrics
from syncd.database import PG_ERRORS, connect

log = structlog.get_logger(__name__)

MEMBER_CLASS = int.from_bytes(b"sync", "big")
"""Advisory lock class of instance membership (key: hashtext(instance name))."""
STREAM_CLASS = int.from_bytes(b"strm", "big")
"""Advisory lock class of stream leases (key: hashtext(stream name))."""


def _rank(stream: str, member: str) -> bytes:
    return blake2b(f"{stream}\x00{member}".encode(), digest_size=8).digest()


def assign(streams: Iterable[str], members: Iterable[str], current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stream → member: as even as possible (counts differ by at most one) and sticky.

    `current` (stream → live holder) is kept up to each member's quota, so a member leaving moves
    only its own streams and one joining takes only the excess of the others. The members holding
    most get the remainder's extra slots. Whatever is left goes, in name order, to its highest
    rendezvous-ranked member with quota left. Same inputs, same answer, on every instance.
    """
    names, crew = sorted(set(streams)), sorted(set(members))
    if not crew:
        return {}
    held = {s: m for s, m in (current or {}).items() if s in set(names) and m in set(crew)}
    holding = Counter(held.values())
    base, extra = divmod(len(names), len(crew))
    by_holding = sorted(crew, key=lambda m: (-holding[m], m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}
    owners: dict[str, str] = {}
    for member in crew:
        mine = sorted((s for s, m in held.items() if m == member), key=lambda s: _rank(s, member), reverse=True)
        for stream in mine[: quota[member]]:
            owners[stream] = member
        quota[member] -= min(len(mine), quota[member])
    for stream in (s for s in names if s not in owners):
        member = max((m for m in crew if quota[m] > 0), key=lambda m: _rank(stream, m))
        quota[member] -= 1
        owners[stream] = member
    return owners


@dataclass(frozen=True, slots=True)
class Owner:
    """One stream's lease as /status shows it."""

    holder: str | None
    epoch: int
    held: bool
    """False when the recorded holder no longer holds the lock (it died or released)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What this instance should do now: hand streams over, then try to take others."""

    release: frozenset[str]
    acquire: frozenset[str]
    members: tuple[str, ...]


class Ownership:
    """This instance's membership and stream leases, all held on one dedicated connection."""

    def __init__(self, dsn: str, instance: str, *, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self.instance = instance
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self.epochs: dict[str, int] = {}
        """Stream → lease epoch, for the streams this instance holds."""
        self.owners: dict[str, Owner] = {}
        """Every stream's lease, as last read by `plan`."""
        self.members: tuple[str, ...] = ()

    @property
    def joined(self) -> bool:
        """True while the member lock's connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    async def join(self, poll: float) -> None:
        """Wait until this instance holds its member lock (a previous session of the same name may linger)."""
        while True:
            try:
                if await self._try_join():
                    log.info("joined", instance=self.instance)
                    return
                log.warning("instance name is held by a live session; waiting", instance=self.instance)
            except PG_ERRORS as exc:
                log.warning("joining failed", error=str(exc))
                await self.leave()
            await asyncio.sleep(poll)

    async def _try_join(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._dsn, timeout=self._timeout)
        if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", MEMBER_CLASS, self.instance):
            return False
        await self._conn.execute(
            "INSERT INTO syncd.members (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET joined_at = now()",
            self.instance,
        )
        return True

    async def plan(self, streams: Sequence[str]) -> Plan:
        """Read the live members and the leases; what to release and what to try to acquire."""
        conn = self._require()
        members = tuple(await conn.fetchval("SELECT array(SELECT syncd.live_members())"))
        rows = await conn.fetch("SELECT stream, holder, epoch, held FROM syncd.stream_owners")
        self.members = members
        self.owners = {r["stream"]: Owner(r["holder"], int(r["epoch"]), bool(r["held"])) for r in rows}
        current = {s: o.holder for s, o in self.owners.items() if o.held and o.holder is not None}
        mine = {s for s, m in assign(streams, members, current).items() if m == self.instance}
        held = set(self.epochs)
        return Plan(frozenset(held - mine), frozenset(mine - held), members)

    async def acquire(self, stream: str) -> int | None:
        """Take `stream`'s lease if its lock is free: the new fencing epoch, else None."""
        conn = self._require()
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", STREAM_CLASS, stream):
            return None
        epoch = int(
            await conn.fetchval(
                """INSERT INTO syncd.stream_leases (stream, epoch, holder, acquired_at) VALUES ($1, 1, $2, now())
                   ON CONFLICT (stream) DO UPDATE
                   SET epoch = syncd.stream_leases.epoch + 1, holder = excluded.holder, acquired_at = now()
                   RETURNING epoch""",
                stream,
                self.instance,
            )
        )
        self.epochs[stream] = epoch
        self.owners[stream] = Owner(self.instance, epoch, held=True)
        self._publish()
        log.info("stream lease acquired", stream=stream, epoch=epoch, instance=self.instance)
        return epoch

    async def release(self, stream: str) -> None:
        """Give `stream`'s lease back (after its runner stopped): another member may take it now."""
        epoch = self.epochs.pop(stream, None)
        if epoch is None:
            return
        self.owners[stream] = Owner(self.instance, epoch, held=False)
        self._publish()
        if self.joined:
            try:
                await self._require().execute("SELECT pg_advisory_unlock($1, hashtext($2))", STREAM_CLASS, stream)
            except PG_ERRORS:
                log.warning("could not unlock; closing the session releases it", stream=stream)
        log.info("stream lease released", stream=stream, instance=self.instance)

    async def alive(self) -> bool:
        """Probe the lease connection; False means every lease is gone with it."""
        if not self.joined:
            return False
        try:
            await asyncio.wait_for(self._require().fetchval("SELECT 1"), self._timeout)
        except PG_ERRORS:
            return False
        return True

    async def leave(self) -> None:
        """Drop every lease and the membership by closing the connection."""
        self.epochs.clear()
        self._publish()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.close(timeout=self._timeout)
        except PG_ERRORS:
            conn.terminate()  # a dead or hung session: dropping it releases the leases just the same
        except asyncio.CancelledError:
            conn.terminate()
            raise

    def owners_json(self) -> Mapping[str, Mapping[str, object]]:
        """The /status `owners` section: per stream, who holds it and at which epoch."""
        return {
            stream: {"holder": o.holder if o.held else None, "epoch": o.epoch}
            for stream, o in sorted(self.owners.items())
        }

    def _require(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            raise asyncpg.InterfaceError("the lease connection is closed")
        return self._conn

    def _publish(self) -> None:
        metrics.STREAMS_OWNED.set(len(self.epochs))
        metrics.LEADER.set(1 if self.epochs else 0)
