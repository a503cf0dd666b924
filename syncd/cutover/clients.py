"""The cutover clients' registry (`syncd.cutover_clients`): what each Node service reports it sees.

Each client (clients/node) writes its own row over its lock session: the mode it routes by, where
its writes go, the handover it acknowledged, its hold durations and its shadow mismatches per
table. A client is connected while that session lives; syncd never writes these rows, it reads
them for the handover, `promote`'s shadow check, `/status`, `syncd cutover status` and the metrics.
A client is connected while its session holds the advisory lock on its own id (migration 0092).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from syncd import metrics
from syncd.database import Connection

STALE_SECONDS = 86_400.0
"""Rows of clients gone (closed or disconnected) longer than this are pruned."""

_COLUMNS = """id, name, service, host, pid, mode, writes, connected, handover_acked, hold_bound_ms, holds,
              holds_timed_out, hold_ms_max, hold_ms_total, shadow_reads, shadow_mismatches, last_error,
              started_at, seen_at, closed_at"""


@dataclass(frozen=True, slots=True)
class ClientReport:
    """One client's row, as it last reported it."""

    id: str
    name: str
    service: str
    host: str
    pid: int
    mode: str
    writes: str
    connected: bool
    handover_acked: int
    hold_bound_ms: int
    holds: int
    holds_timed_out: int
    hold_ms_max: float
    hold_ms_total: float
    shadow_reads: int
    shadow_mismatches: Mapping[str, int]
    last_error: str | None
    started_at: datetime
    seen_at: datetime
    closed_at: datetime | None

    @property
    def label(self) -> str:
        """`service@host:pid`, how operators recognise a client."""
        return f"{self.service}@{self.host}:{self.pid}"

    def as_json(self) -> dict[str, Any]:
        """The client in /status."""
        return {
            "id": self.id,
            "client": self.label,
            "connected": self.connected,
            "mode": self.mode,
            "writes": self.writes,
            "hold_bound_ms": self.hold_bound_ms,
            "holds": self.holds,
            "holds_timed_out": self.holds_timed_out,
            "hold_ms_max": round(self.hold_ms_max, 3),
            "hold_ms_mean": round(self.hold_ms_total / self.holds, 3) if self.holds else None,
            "shadow_reads": self.shadow_reads,
            "shadow_mismatches": dict(self.shadow_mismatches),
            "last_error": self.last_error,
            "seen_at": self.seen_at.isoformat(),
        }


def _report(row: asyncpg.Record) -> ClientReport:
    return ClientReport(**{k: row[k] for k in ClientReport.__slots__})


async def reports(conn: Connection, names: Iterable[str]) -> dict[str, list[ClientReport]]:
    """Every registered client of each named file, connected first, newest first."""
    wanted = list(names)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM syncd.cutover_clients_live WHERE name = ANY($1)
             ORDER BY connected DESC, started_at DESC""",
        wanted,
    )
    found: dict[str, list[ClientReport]] = {n: [] for n in wanted}
    for row in rows:
        found[row["name"]].append(_report(row))
    return found


async def connected(conn: Connection, name: str) -> list[ClientReport]:
    """The file's clients whose lock session is alive right now."""
    return [c for c in (await reports(conn, [name]))[name] if c.connected]


async def unacknowledged(conn: Connection, name: str, ids: Sequence[str], handover_id: int) -> list[ClientReport]:
    """Of the clients `ids` (connected when the handover began), those that neither acknowledged it nor closed.

    Once the writers' lock is granted, such a client is one whose session ended without saying it
    stopped writing: it lost PostgreSQL mid-handover, and a write of it may still be landing.
    """
    clients = (await reports(conn, [name]))[name]
    return [c for c in clients if c.id in ids and c.handover_acked < handover_id and c.closed_at is None]


async def shadow_mismatches(conn: Connection, name: str, since: datetime) -> list[str]:
    """One reason per client that reported mismatching shadow reads since `since` (the shadow began)."""
    reasons = []
    for c in (await reports(conn, [name]))[name]:
        if c.seen_at < since:
            continue
        for table, count in sorted(c.shadow_mismatches.items()):
            if count:
                reasons.append(f"shadow: {c.label} read {count} record(s) of {table} that PostgreSQL disagrees with")
    return reasons


async def prune(conn: Connection) -> int:
    """Delete the rows of clients gone for longer than STALE_SECONDS; rows deleted."""
    deleted: int = await conn.fetchval(
        """WITH gone AS (
             DELETE FROM syncd.cutover_clients c
              WHERE c.seen_at < now() - make_interval(secs => $1)
                AND NOT syncd.holds_advisory_lock(c.backend_pid, syncd.client_lock_key(c.id))
             RETURNING 1)
           SELECT count(*) FROM gone""",
        STALE_SECONDS,
    )
    return deleted


def record_metrics(found: Mapping[str, Sequence[ClientReport]]) -> None:
    """Publish the connected clients per mode, their shadow mismatches, longest hold and timed-out holds."""
    for gauge in (
        metrics.CUTOVER_CLIENTS,
        metrics.CUTOVER_SHADOW_MISMATCHES,
        metrics.CUTOVER_HOLD_SECONDS_MAX,
        metrics.CUTOVER_HOLDS_TIMED_OUT,
    ):
        gauge.clear()
    for name, clients in found.items():
        live = [c for c in clients if c.connected]
        modes: dict[str, int] = {}
        mismatches: dict[str, int] = {}
        for c in live:
            modes[c.mode] = modes.get(c.mode, 0) + 1
            for table, count in c.shadow_mismatches.items():
                mismatches[table] = mismatches.get(table, 0) + count
        for mode, count in modes.items():
            metrics.CUTOVER_CLIENTS.labels(name, mode).set(count)
        for table, count in mismatches.items():
            metrics.CUTOVER_SHADOW_MISMATCHES.labels(name, table).set(count)
        metrics.CUTOVER_HOLD_SECONDS_MAX.labels(name).set(max((c.hold_ms_max for c in live), default=0.0) / 1000)
        metrics.CUTOVER_HOLDS_TIMED_OUT.labels(name).set(sum(c.holds_timed_out for c in live))
