"""Per-stream leases against a real PostgreSQL: spread, rebalance on join and leave, per-stream fencing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from syncd.errors import Fenced
from syncd.ownership import Ownership
from syncd.sink.postgres import PostgresSink
from tests.integration.sink.test_postgres import ITEMS, batch, item

STREAMS = ["workspace", "documentation", "questdb:telegram_bots", "kafka:relay"]


@pytest.fixture
async def members(dsn: str) -> AsyncIterator[Callable[[str], Ownership]]:
    """Make instances on the test database; all leave at the end."""
    made: list[Ownership] = []

    def make(name: str) -> Ownership:
        made.append(Ownership(dsn, name))
        return made[-1]

    yield make
    for member in made:
        await member.leave()


async def settle(*instances: Ownership, rounds: int = 4) -> None:
    """Run rebalance rounds, each instance releasing before the others acquire, as the daemons do."""
    for _ in range(rounds):
        for instance in instances:
            plan = await instance.plan(STREAMS)
            for stream in plan.release:
                await instance.release(stream)
            for stream in plan.acquire:
                await instance.acquire(stream)


async def test_a_lone_instance_owns_every_stream(members: Callable[[str], Ownership]) -> None:
    solo = members("solo")
    await solo.join(poll=0.05)
    await settle(solo, rounds=1)
    assert solo.epochs == dict.fromkeys(STREAMS, 1)
    await solo.plan(STREAMS)
    assert solo.owners_json()["workspace"] == {"holder": "solo", "epoch": 1}


async def test_instances_share_evenly_and_rebalance_on_join_and_leave(
    members: Callable[[str], Ownership], pool: asyncpg.Pool
) -> None:
    a, b = members("a"), members("b")
    await a.join(poll=0.05)
    await settle(a)
    await b.join(poll=0.05)
    await settle(a, b)
    assert len(a.epochs) == len(b.epochs) == 2
    assert set(a.epochs).isdisjoint(b.epochs)
    assert all(epoch == 2 for epoch in b.epochs.values())  # taken over: the epoch was bumped

    c = members("c")
    await c.join(poll=0.05)
    await settle(a, b, c)
    assert sorted(len(m.epochs) for m in (a, b, c)) == [1, 1, 2]
    assert set(a.epochs) | set(b.epochs) | set(c.epochs) == set(STREAMS)

    # b dies: its session ends and PostgreSQL drops its locks; the others take its streams.
    b_streams = set(b.epochs)
    await b.leave()
    await settle(a, c)
    assert set(a.epochs) | set(c.epochs) == set(STREAMS)
    assert sorted(len(m.epochs) for m in (a, c)) == [2, 2]
    owners = {r["stream"]: r["holder"] for r in await pool.fetch("SELECT stream, holder FROM syncd.stream_owners")}
    assert all(owners[s] in {"a", "c"} for s in b_streams)
    assert set(await pool.fetchval("SELECT array(SELECT syncd.live_members())")) == {"a", "c"}


async def test_a_deposed_owner_cannot_commit_its_stream(
    members: Callable[[str], Ownership], pool: asyncpg.Pool
) -> None:
    a, b = members("a"), members("b")
    await a.join(poll=0.05)
    await settle(a, rounds=1)
    old = PostgresSink(pool, a.epochs["workspace"], lease="workspace")
    await old.apply(batch([item("1", "a")]))
    await a.leave()  # as if its connection dropped while its stream kept running
    await b.join(poll=0.05)
    await settle(b, rounds=1)
    with pytest.raises(Fenced):
        await old.apply(batch([item("1", "stale")], position=2))
    new = PostgresSink(pool, b.epochs["workspace"], lease="workspace")
    await new.apply(batch([item("1", "fresh")], position=3))
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '1'") == "fresh"


async def test_a_second_session_with_the_same_name_waits(members: Callable[[str], Ownership]) -> None:
    first, twin = members("same"), members("same")
    await first.join(poll=0.05)
    assert not await twin._try_join()
    await first.leave()
    assert await twin._try_join()
