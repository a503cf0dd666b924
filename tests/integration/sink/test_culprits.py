"""A rejected batch bisected to the rows PostgreSQL refuses on their own, on a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from syncd.errors import BatchRejected
from syncd.model import ApplyResult
from syncd.sink.postgres import PostgresSink
from tests.integration.sink.test_postgres import ITEMS, batch, item, leader_epoch, table_state


@pytest.mark.parametrize(("size", "bad"), [(1, [0]), (40, [17]), (40, [0, 1, 39]), (200, [3, 150, 151, 199])])
async def test_the_refused_rows_are_found_and_nothing_is_committed(
    pool: asyncpg.Pool, size: int, bad: list[int]
) -> None:
    """Fresh rows (the COPY path) and known rows (the merge): each refused one named with its reason."""
    await pool.execute(f"ALTER TABLE {ITEMS} ADD CONSTRAINT no_forbidden CHECK (title <> 'forbidden')")
    sink = PostgresSink(pool, await leader_epoch(pool))
    await sink.apply(batch([item(f"{i:03}", "before") for i in range(0, size, 2)], position=1))
    before = await table_state(pool)
    rows = [item(f"{i:03}", "forbidden" if i in bad else "after") for i in range(size)]
    with pytest.raises(BatchRejected) as caught:
        await sink.apply(batch(rows, position=2))
    error = caught.value
    assert error.sqlstate == "23514"
    assert sorted(r.key for r in error.rows) == [(f"{i:03}",) for i in bad]
    assert {r.row_hash for r in error.rows} == {rows[i][-1] for i in bad}
    assert all('"no_forbidden"' in r.reason and r.table == ITEMS for r in error.rows)
    assert await table_state(pool) == before
    assert await sink.load_checkpoint("lowdb", "workspace") == {"version": 1}
    # Without them the batch commits; the refused keys keep what they had.
    await sink.apply(batch([r for i, r in enumerate(rows) if i not in bad], position=3))
    titles = {key: title for key, title, _ in await table_state(pool)}
    assert titles == {f"{i:03}": "after" for i in range(size) if i not in bad} | {
        f"{i:03}": "before" for i in bad if i % 2 == 0
    }


async def test_a_refusal_that_is_no_rows_own_names_none(pool: asyncpg.Pool) -> None:
    """Two rows that only clash together (a unique index): the batch is rejected, no row is blamed."""
    await pool.execute(f"CREATE UNIQUE INDEX one_title ON {ITEMS} (title)")
    sink = PostgresSink(pool, await leader_epoch(pool))
    with pytest.raises(BatchRejected) as caught:
        await sink.apply(batch([item("1", "same"), item("2", "same")]))
    assert caught.value.sqlstate == "23505"
    assert caught.value.rows == ()
    assert (await sink.apply(batch([item("1", "same")])))[ITEMS] == ApplyResult(inserted=1)
