"""A batch filling a month with no partition: loaded standalone, indexed, attached (syncd/sink/partitions.py).

An event trigger records the DDL each batch ran, which tells the paths apart: the standalone load
builds the parent's indexes itself (CREATE INDEX), the regular path only creates the partition.
Whatever the path, the end state is checked the same way: the month's partition attached with the
parent's index children, the rows as sent (the last version per key), the rollup views equal to the
full scans, the checkpoint stored.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from syncd.errors import BatchRejected
from syncd.model import ApplyResult, Batch, Checkpoint, TableChanges
from syncd.sink.postgres import SMALL_BATCH, PostgresSink
from tests.integration.sink.test_postgres import leader_epoch
from tests.integration.test_reporting_rollups import COLUMNS, DAILY, FULL_BY_CHANNEL, FULL_DAILY, TABLE, same, signal

KEY = ("ts", "signal_key")
MONTH = datetime(2024, 2, 1, tzinfo=UTC)
PARTITION = "signals.tp_capital_signals_p202402"
N = 3 * SMALL_BATCH
STANDALONE_DDL = ["CREATE TABLE", "ALTER TABLE", "ALTER TABLE", "CREATE INDEX", "CREATE INDEX", "CREATE INDEX",
                  "ALTER TABLE", "ALTER TABLE"]
"""The standalone load's DDL: the table (LIKE's part of it reported as an ALTER TABLE), its primary key,
the other three indexes, ATTACH, the CHECK dropped."""
ENSURED_DDL = ["CREATE TABLE", "ALTER TABLE", "ALTER TABLE", "ALTER TABLE"]
"""ensure_partitions' DDL for a month: the same table, attached at once (ATTACH builds its empty indexes)."""

DdlLog = Callable[[], Awaitable[list[str]]]


@pytest.fixture
async def ddl(pool: asyncpg.Pool) -> DdlLog:
    """The command tags of the DDL run on the signals schema since the fixture started, in order
    (what rolled back is gone: the log is written in the DDL's transaction)."""
    await pool.execute(
        """CREATE TABLE public.ddl_log (id serial PRIMARY KEY, tag text NOT NULL);
           CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO public.ddl_log (tag)
               SELECT command_tag FROM pg_event_trigger_ddl_commands() WHERE schema_name = 'signals';
           END $$;
           CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl();"""
    )

    async def tags() -> list[str]:
        return [r["tag"] for r in await pool.fetch("SELECT tag FROM public.ddl_log ORDER BY id")]

    return tags


def rows(first: int, n: int, start: datetime = MONTH, *, days: int = 20) -> list[tuple[Any, ...]]:
    """`n` random signals (keys k<first>…) within `days` days from `start`, groups colliding."""
    rng = random.Random(first)
    return [
        (start + timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400)), *signal(rng, first + i)[1:])
        for i in range(n)
    ]


def batch(signals: Sequence[tuple[Any, ...]], stream: str = "signals", position: int = 1) -> Batch:
    """One signals batch with its checkpoint."""
    return Batch(Checkpoint("questdb", stream, {"n": position}), [TableChanges(TABLE, COLUMNS, KEY, signals)])


async def stored(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    """Every signal as the batches sent it, in key order."""
    found = await pool.fetch(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY ts, signal_key")
    return [tuple(r) for r in found]


def last_per_key(signals: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The last version of each key, in key order: what the table must hold."""
    return sorted({(s[0], s[1]): s for s in signals}.values(), key=lambda s: (s[0], s[1]))


async def assert_end_state(pool: asyncpg.Pool, signals: Sequence[tuple[Any, ...]], months: Sequence[str]) -> None:
    """The months' partitions attached with the parent's index children, rows, rollups as a full scan."""
    for month in months:
        partition = f"signals.tp_capital_signals_p{month}"
        parent = await pool.fetchval(
            "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = $1::regclass", partition
        )
        assert parent == TABLE
        children = await pool.fetch(
            """SELECT p.indexrelid::regclass::text AS parent, c.inhrelid IS NOT NULL AS adopted
                 FROM pg_index p
                 LEFT JOIN (pg_inherits c JOIN pg_index x ON x.indexrelid = c.inhrelid AND x.indrelid = $1::regclass)
                        ON c.inhparent = p.indexrelid
                WHERE p.indrelid = $2::regclass""",
            partition,
            TABLE,
        )
        assert len(children) == 4
        assert all(r["adopted"] for r in children), children
        checks = await pool.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'", partition
        )
        assert checks == 0
    assert await stored(pool) == last_per_key(signals)
    await same(pool, DAILY.format(source="reporting.signals_daily"), DAILY.format(source=FULL_DAILY),
               "day, channel, asset")
    await same(pool, "SELECT * FROM reporting.signals_by_channel", f"SELECT * FROM {FULL_BY_CHANNEL}",
               "source, channel")
    assert await pool.fetchval("SELECT count(*) FROM reporting.signals_daily") > 0


async def test_a_missing_month_is_loaded_standalone_then_attached(pool: asyncpg.Pool, ddl: DdlLog) -> None:
    """Its indexes are the parent's children, rows and rollups exact, the checkpoint in the same transaction."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    signals = rows(0, N)
    assert await pool.fetchval("SELECT to_regclass($1)", PARTITION) is None

    assert (await sink.apply(batch(signals)))[TABLE] == ApplyResult(inserted=N)

    assert await ddl() == STANDALONE_DDL
    await assert_end_state(pool, signals, ["202402"])
    # The checkpoint committed in the transaction that created the partition.
    same_transaction = await pool.fetchval(
        f"""SELECT (SELECT xmin FROM syncd.checkpoints WHERE stream = 'signals')::text
                 = (SELECT xmin FROM pg_class WHERE oid = '{PARTITION}'::regclass)::text"""
    )
    assert same_transaction
    assert await pool.fetchval("SELECT position FROM syncd.checkpoints WHERE stream = 'signals'") == {"n": 1}

    # The month exists now: the next batch of it goes in the regular way, next to the first.
    more = rows(N, N)
    assert (await sink.apply(batch(more, position=2)))[TABLE] == ApplyResult(inserted=N)
    assert await ddl() == STANDALONE_DDL
    await assert_end_state(pool, signals + more, ["202402"])


async def _span_two_months(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[str]]:
    return rows(0, N, MONTH + timedelta(days=25), days=10), ["202402", "202403"]


async def _existing_empty_partition(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[str]]:
    await pool.execute(f"SELECT signals.ensure_partitions('{TABLE}', $1, $1)", MONTH)
    return rows(0, N), ["202402"]


async def _capture_triggers(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[str]]:
    await pool.execute(f"SELECT syncd.track_changes('{TABLE}', 'signal_key', false)")
    return rows(0, N), ["202402"]


@pytest.mark.parametrize("setup", [_span_two_months, _existing_empty_partition, _capture_triggers])
async def test_other_batches_take_the_regular_path_to_the_same_end_state(
    pool: asyncpg.Pool,
    ddl: DdlLog,
    setup: Callable[[asyncpg.Pool], Awaitable[tuple[list[tuple[Any, ...]], list[str]]]],
) -> None:
    """Two months, a month whose (empty) partition exists, a table with triggers ATTACH would skip."""
    signals, months = await setup(pool)
    before = await ddl()
    sink = PostgresSink(pool, await leader_epoch(pool))

    assert (await sink.apply(batch(signals)))[TABLE] == ApplyResult(inserted=N)

    assert "CREATE INDEX" not in (await ddl())[len(before) :]
    await assert_end_state(pool, signals, months)
    if setup is _capture_triggers:
        assert await pool.fetchval("SELECT count(*) FROM syncd.outbox WHERE table_name = $1", TABLE) == N


async def test_a_batch_repeating_keys_falls_back_to_the_merge_last_wins(pool: asyncpg.Pool, ddl: DdlLog) -> None:
    """The primary key's build refuses the repeated key; the batch is retried through the merge."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    signals = rows(0, N)
    later = list(signals[7])
    later[COLUMNS.index("asset")] = "LAST"
    repeated = [*signals, tuple(later)]

    assert (await sink.apply(batch(repeated)))[TABLE] == ApplyResult(inserted=N)

    assert await ddl() == ENSURED_DDL  # the standalone attempt rolled back, then ensure_partitions
    await assert_end_state(pool, repeated, ["202402"])


async def test_a_batch_rejected_after_the_partition_was_made_leaves_nothing(pool: asyncpg.Pool, ddl: DdlLog) -> None:
    """A row the standalone table refuses rolls back the table, the rows, the rollups and the checkpoint."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    signals = rows(0, N)
    signals[N // 2] = (signals[N // 2][0], None, *signals[N // 2][2:])  # signal_key NOT NULL

    with pytest.raises(BatchRejected) as rejected:
        await sink.apply(batch(signals))

    assert rejected.value.sqlstate == "23502"
    assert await pool.fetchval("SELECT to_regclass($1)", PARTITION) is None
    assert await pool.fetchval(f"SELECT count(*) FROM {TABLE}") == 0
    assert await pool.fetchval("SELECT count(*) FROM reporting.signals_daily_rollup") == 0
    assert await pool.fetchval("SELECT count(*) FROM syncd.checkpoints") == 0
    assert await ddl() == []


@pytest.mark.parametrize("spans", [False, True], ids=["same month", "a writer spanning it and the next"])
async def test_two_sinks_reaching_the_same_new_month_at_once(pool: asyncpg.Pool, spans: bool) -> None:
    """Both wait at the parent's lock; one creates the month (standalone, or by ensure_partitions for a
    batch spanning two months), the other then finds it and merges.

    The second batch shares half its keys with the first (same versions): those are unchanged.
    """
    epoch = await leader_epoch(pool)
    first = rows(0, N)
    second = rows(0, N // 2) + rows(N, N // 2, MONTH + timedelta(days=29) if spans else MONTH)
    assert second[: N // 2] == first[: N // 2]
    async with pool.acquire() as blocker:
        held = blocker.transaction()
        await held.start()
        await blocker.execute(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE")
        applying = [
            asyncio.create_task(PostgresSink(pool, epoch).apply(batch(signals, stream)))
            for signals, stream in ((first, "a"), (second, "b"))
        ]
        await _waiting_for_the_parent(pool, 2)
        await held.commit()
        results = [r[TABLE] for r in await asyncio.wait_for(asyncio.gather(*applying), 60)]

    # Whichever loaded the month first inserted all its rows; the other then merged into them.
    assert sorted(results, key=lambda r: r.inserted) == [ApplyResult(inserted=N // 2, unchanged=N // 2),
                                                         ApplyResult(inserted=N)]
    partitions = await pool.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'tp\\_capital\\_signals\\_p202402%' AND relkind = 'r'"
    )
    assert partitions == 1
    await assert_end_state(pool, first + second, ["202402", "202403"] if spans else ["202402"])
    assert await pool.fetchval("SELECT count(*) FROM syncd.checkpoints WHERE stream IN ('a', 'b')") == 2


async def _waiting_for_the_parent(pool: asyncpg.Pool, sessions: int) -> None:
    """Until `sessions` sessions wait for a lock on the signals table."""
    for _ in range(3000):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = $1::regclass AND NOT granted", TABLE
        )
        if waiting >= sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {sessions} sessions ever waited for {TABLE}")
