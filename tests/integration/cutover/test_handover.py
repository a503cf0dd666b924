"""syncd's side of the handshake on a real database: shadow refusals, orphaned handovers, one transition at a time.

The real cutover client's side (and a handover timing out or losing a client) is driven end to end in
tests/e2e/test_cutover_client_*.py; here the registry rows are written as a client would write them.
"""

from __future__ import annotations

import asyncpg
import pytest

from syncd.config import LowdbSettings
from syncd.cutover import clients, handover, state, transitions
from syncd.errors import CutoverRefused

ACTOR = "tester@host"
REGISTER = """WITH present AS (SELECT pg_advisory_lock(syncd.client_lock_key($1)))
              INSERT INTO syncd.cutover_clients (id, name, service, host, pid, backend_pid, mode, writes,
                                                 hold_bound_ms, shadow_mismatches)
              SELECT $1, 'workspace', 'api', 'h', 7, pg_backend_pid(), 'shadow', 'lowdb', 5000, $2::jsonb
                FROM present"""


async def mode(pool: asyncpg.Pool) -> str:
    """The file's mode."""
    async with pool.acquire() as conn:
        return (await state.modes(conn, ["workspace"]))["workspace"]


async def test_promote_refused_while_a_client_reports_shadow_mismatches(
    pool: asyncpg.Pool, mirrored: LowdbSettings
) -> None:
    """Refused naming the client and the table; a new shadow period counts afresh."""
    await transitions.shadow(pool, mirrored, actor=ACTOR)
    await pool.execute(REGISTER, "c1", {"workspace.workspace_items": 2})  # the pool encodes jsonb
    with pytest.raises(CutoverRefused) as refused:
        await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
    assert refused.value.reasons == [
        "shadow: api@h:7 read 2 record(s) of workspace.workspace_items that PostgreSQL disagrees with"
    ]
    assert await mode(pool) == "shadow"

    assert (await transitions.rollback(pool, mirrored, actor=ACTOR)).to_mode == "mirror"
    await transitions.shadow(pool, mirrored, actor=ACTOR)  # the old report predates this shadow
    outcome = await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
    assert (outcome.from_mode, outcome.to_mode) == ("shadow", "pg-primary")


async def test_registry_reports_a_client_connected_only_while_its_session_lives(pool: asyncpg.Pool, dsn: str) -> None:
    """`connected` follows the registering session, not the row."""
    session = await asyncpg.connect(dsn)
    try:
        await session.execute(REGISTER, "c2", "{}")
        async with pool.acquire() as conn:
            assert [c.id for c in await clients.connected(conn, "workspace")] == ["c2"]
    finally:
        await session.close()
    async with pool.acquire() as conn:
        assert await clients.connected(conn, "workspace") == []
        (report,) = (await clients.reports(conn, ["workspace"]))["workspace"]
    assert (report.label, report.connected) == ("api@h:7", False)


async def test_an_orphaned_handover_returns_to_the_mode_it_came_from(pool: asyncpg.Pool) -> None:
    """A handover whose command died goes back; one whose command still runs is left alone."""
    await pool.execute(
        """INSERT INTO syncd.cutover (name, mode, handover_id, handover_from)
           VALUES ('workspace', 'switching', 3, 'shadow')"""
    )
    async with pool.acquire() as running, pool.acquire() as other:
        await running.execute("SELECT pg_advisory_lock(syncd.writer_lock_key('workspace', 'handover'))")
        assert await handover.recover_orphan(other, "workspace", ACTOR) is None
        assert await mode(pool) == "switching"
        await running.execute("SELECT pg_advisory_unlock_all()")
        assert await handover.recover_orphan(other, "workspace", ACTOR) == "shadow"
    assert await mode(pool) == "shadow"
    reason = await pool.fetchval("SELECT reason FROM syncd.cutover_log ORDER BY id DESC LIMIT 1")
    assert reason == "handover 3 orphaned (the command running it ended): back to shadow"


async def test_a_second_transition_of_a_file_is_refused_while_one_runs(
    pool: asyncpg.Pool, mirrored: LowdbSettings
) -> None:
    """Two commands never interleave on one file."""
    async with pool.acquire() as running:
        await running.execute("SELECT pg_advisory_lock(syncd.writer_lock_key('workspace', 'handover'))")
        with pytest.raises(CutoverRefused, match="another cutover command for this file is running"):
            await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
        await running.execute("SELECT pg_advisory_unlock_all()")
    assert await mode(pool) == "mirror"
