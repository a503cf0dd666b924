"""promote, rollback and retire on a real database: every refusal, and what each transition does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import orjson
import pytest

from syncd import outbox
from syncd.config import LowdbSettings
from syncd.cutover import state, transitions
from syncd.cutover.verify import verify_file
from syncd.errors import CutoverRefused, ModeChanged
from syncd.lowdb.source import LowdbSource
from syncd.sink.postgres import PostgresSink
from syncd.stream import StreamRunner
from tests.integration.cutover.conftest import item, mirror, write_file

ACTOR = "tester@host"
ITEMS = [item("1"), item("0c160b10-4aed-4bca-9f96-704f31d3ccf9"), item("item-1762600000000-k3j9x2a")]


async def mode_and_log(pool: asyncpg.Pool, name: str = "workspace") -> tuple[str, int]:
    """Current mode and number of logged transitions."""
    async with pool.acquire() as conn:
        mode = (await state.modes(conn, [name]))[name]
    return mode, await pool.fetchval("SELECT count(*) FROM syncd.cutover_log WHERE name = $1", name)


async def refused(pool: asyncpg.Pool, settings: LowdbSettings, max_lag: float = 0.3) -> str:
    """Promote, expecting a refusal; returns the reasons and checks nothing changed."""
    with pytest.raises(CutoverRefused) as caught:
        await transitions.promote(pool, settings, actor=ACTOR, max_lag=max_lag)
    assert await mode_and_log(pool) == ("mirror", 0)
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox_consumers") == 0
    return "; ".join(caught.value.reasons)


async def test_promote_refused_on_verify_mismatch(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """A row changed behind syncd's back: refused, naming the table and the key."""
    await pool.execute("UPDATE workspace.workspace_items SET title = 'x' WHERE id = '1'")
    assert "verify: workspace.workspace_items has 1 mismatching row(s) (different: 1)" in await refused(pool, mirrored)


async def test_promote_refused_while_a_version_is_not_applied(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """The file changed and no stream applies it: refused on lag after waiting --max-lag."""
    write_file(mirrored.path, [*ITEMS, item("new")])
    assert "lag: the file's version of" in await refused(pool, mirrored)


async def test_promote_refused_with_quarantine_held(
    pool: asyncpg.Pool, sink: PostgresSink, mirrored: LowdbSettings
) -> None:
    """A held record blocks the promote, naming the command that lists it."""
    write_file(mirrored.path, [*ITEMS, item("bad", title="")])
    await mirror(pool, sink, mirrored)
    reasons = await refused(pool, mirrored)
    assert "quarantine: 1 record(s) held (syncd quarantine list --stream workspace)" in reasons


async def test_promote_refused_before_any_apply(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A file syncd never applied cannot be promoted."""
    settings = LowdbSettings(name="workspace", path=tmp_path / "library.json", layout="workspace")
    write_file(settings.path, [])
    assert "syncd has never applied this file" in await refused(pool, settings)


async def test_promote_switches_mode_logs_it_and_stops_forward_batches(
    pool: asyncpg.Pool, sink: PostgresSink, mirrored: LowdbSettings
) -> None:
    """The handover and pg-primary are logged with the actor; a LowDB batch after it fails with ModeChanged."""
    outcome = await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
    assert (outcome.from_mode, outcome.to_mode, outcome.clients) == ("mirror", "pg-primary", 0)
    assert await mode_and_log(pool) == ("pg-primary", 2)
    log = await pool.fetch("SELECT from_mode, to_mode, actor FROM syncd.cutover_log ORDER BY id")
    assert [dict(r) for r in log] == [
        {"from_mode": "mirror", "to_mode": "switching", "actor": ACTOR},
        {"from_mode": "switching", "to_mode": "pg-primary", "actor": ACTOR},
    ]
    with pytest.raises(CutoverRefused, match="promote needs mode mirror or shadow, it is pg-primary"):
        await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)

    write_file(mirrored.path, [*ITEMS, item("late")])
    runner = StreamRunner(LowdbSource(mirrored, pool=pool), sink)
    with pytest.raises(ModeChanged, match="workspace is in mode pg-primary"):
        await asyncio.wait_for(runner.run(), 10)
    assert await pool.fetchval("SELECT count(*) FROM workspace.workspace_items WHERE id = 'late'") == 0


async def test_rollback_flushes_pg_changes_into_the_file_then_mirrors(
    pool: asyncpg.Pool, sink: PostgresSink, mirrored: LowdbSettings
) -> None:
    """App writes in pg-primary reach the file on rollback; afterwards the forward diff changes nothing."""
    await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
    await pool.execute("UPDATE workspace.workspace_items SET title = 'from the api' WHERE id = '1'")
    outcome = await transitions.rollback(pool, mirrored, actor=ACTOR)
    assert outcome.written_back == 1
    assert await mode_and_log(pool) == ("mirror", 4)
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox_consumers") == 0
    records = orjson.loads(mirrored.path.read_bytes())["items"]
    assert [r["title"] for r in records if r["id"] == "1"] == ["from the api"]

    audit_before = await pool.fetchval("SELECT count(*) FROM syncd.audit_log")
    await mirror(pool, sink, mirrored)
    assert await pool.fetchval("SELECT count(*) FROM syncd.audit_log") == audit_before
    async with pool.acquire() as conn:
        assert (await verify_file(conn, mirrored)).clean


async def test_rollback_refused_outside_pg_primary(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """Only a promoted file can roll back."""
    with pytest.raises(CutoverRefused, match="rollback needs mode pg-primary or shadow, it is mirror"):
        await transitions.rollback(pool, mirrored, actor=ACTOR)


async def test_retire_waits_for_the_window(pool: asyncpg.Pool, mirrored: LowdbSettings) -> None:
    """Refused inside the rollback window; afterwards the reverse path's consumer is gone."""
    await transitions.promote(pool, mirrored, actor=ACTOR, max_lag=1.0)
    with pytest.raises(CutoverRefused, match=r"the rollback window is 24\.0 h"):
        await transitions.retire(pool, mirrored, actor=ACTOR, window=24 * 3600)
    await transitions.retire(pool, mirrored, actor=ACTOR, window=0)
    assert await mode_and_log(pool) == ("retired", 3)
    async with pool.acquire() as conn:
        with pytest.raises(LookupError):
            await outbox.read(conn, state.reverse_consumer("workspace"))
