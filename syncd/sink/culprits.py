"""The rows of a rejected batch that PostgreSQL refuses on their own, found by bisecting it.

Validation (`syncd.tables`, `syncd.poison`) keeps what PostgreSQL cannot hold out of a batch; this
is the net under it, for what only the server knows (a CHECK constraint added by hand, an index
entry too large, a trigger's rule). The batch's upserts for the refusing table are tried in halves,
each half in a savepoint rolled back whatever happens, inside one transaction that never commits:
k bad rows among n cost O(k log n) probes, and nothing of the probing reaches the tables. The
source then quarantines what is found and rebuilds the batch without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from syncd.database import Connection, borrowed
from syncd.errors import RejectedRow
from syncd.model import Row, TableChanges

DATA_CLASSES = frozenset({"22", "23", "54"})
"""SQLSTATE classes of a refusal about the data: data exception, integrity constraint, program limit."""
MAX_CULPRITS = 100
"""Stop bisecting after this many: a batch refused row after row has a cause bigger than rows."""
ACQUIRE_TIMEOUT = 10.0
"""Bound on waiting for a pooled connection to bisect on (every wait on PostgreSQL has one)."""

Upsert = Callable[[Connection, TableChanges], Awaitable[Any]]


class _Undo(Exception):
    """Raised inside a probe's savepoint to roll back what a successful probe wrote."""


def about_rows(sqlstate: str) -> bool:
    """Whether a refusal with this SQLSTATE can be a row's own fault (worth bisecting for)."""
    return sqlstate[:2] in DATA_CLASSES


async def culprits(pool: asyncpg.Pool, changes: TableChanges, upsert: Upsert) -> list[RejectedRow]:
    """The upserts of `changes` that PostgreSQL refuses one by one; nothing is committed."""
    async with borrowed(pool, ACQUIRE_TIMEOUT) as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            found: list[RejectedRow] = []
            await _bisect(conn, changes, list(changes.upserts), upsert, found)
            return found
        finally:
            await transaction.rollback()


async def _bisect(
    conn: Connection, changes: TableChanges, rows: Sequence[Row], upsert: Upsert, found: list[RejectedRow]
) -> None:
    if not rows or len(found) >= MAX_CULPRITS:
        return
    try:
        async with conn.transaction():
            await upsert(conn, replace(changes, upserts=rows, deletes=()))
            raise _Undo
    except _Undo:
        return
    except (asyncpg.PostgresError, asyncpg_base.DataError) as exc:
        code = exc.sqlstate if isinstance(exc, asyncpg.PostgresError) else "22000"
        if code is None or not about_rows(code):
            raise
        if len(rows) == 1:
            found.append(_rejected(changes, rows[0], code, exc))
            return
    middle = len(rows) // 2
    await _bisect(conn, changes, rows[:middle], upsert, found)
    await _bisect(conn, changes, rows[middle:], upsert, found)


def _rejected(changes: TableChanges, row: Row, code: str, exc: Exception) -> RejectedRow:
    key = tuple(row[changes.columns.index(k)] for k in changes.key)
    detail = getattr(exc, "detail", None)
    reason = f"{exc}" + (f" ({detail})" if detail else "")
    return RejectedRow(changes.table, key, bytes(row[changes.columns.index("row_hash")]), code, reason)
