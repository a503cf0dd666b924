"""The sink against a real PostgreSQL: idempotence, outbox, atomicity, fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

import asyncpg
import orjson
import pytest

from syncd.database import init_connection
from syncd.errors import BatchRejected, Fenced, ModeChanged, SinkUnavailable
from syncd.model import ApplyResult, Batch, Checkpoint, QuarantinedRecord, TableChanges
from syncd.sink.postgres import SMALL_BATCH, PostgresSink

ITEMS = "workspace.workspace_items"
ITEM_COLUMNS = ("id", "title", "category", "priority", "status", "tags", "created_at", "extra", "row_hash")
T0 = datetime(2025, 10, 23, 22, 45, 24, 940000, tzinfo=UTC)


def item(key: str, title: str) -> tuple[object, ...]:
    """A workspace item row, hashed like a source would hash its record."""
    record = {"id": key, "title": title, "category": "dashboard", "priority": "medium", "status": "new"}
    digest = blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    return (key, title, "dashboard", "medium", "new", ["teste"], T0, {}, digest)


def batch(upserts: list[tuple[object, ...]], deletes: list[str] = (), position: int = 1) -> Batch:
    """A one-table batch for the `workspace` stream."""
    changes = TableChanges(ITEMS, ITEM_COLUMNS, ("id",), upserts, [(k,) for k in deletes])
    return Batch(Checkpoint("lowdb", "workspace", {"version": position}), [changes])


async def leader_epoch(pool: asyncpg.Pool) -> int:
    """Take leadership the way Leadership does: bump the epoch."""
    epoch: int = await pool.fetchval("UPDATE syncd.leader SET epoch = epoch + 1 RETURNING epoch")
    return epoch


async def table_state(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    """Every item row without bookkeeping columns, in key order."""
    rows = await pool.fetch(f"SELECT id, title, row_hash FROM {ITEMS} ORDER BY id")
    return [tuple(r) for r in rows]


async def test_same_batch_twice_is_idempotent_and_emits_one_event_per_change(pool: asyncpg.Pool) -> None:
    """Re-applying a batch changes nothing and adds no outbox rows; a real change adds exactly one."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    first = batch([item("1", "a"), item("2", "b"), item("3", "c")])

    assert (await sink.apply(first))[ITEMS] == ApplyResult(inserted=3)
    state = await table_state(pool)
    assert (await sink.apply(first))[ITEMS] == ApplyResult(unchanged=3)
    assert await table_state(pool) == state
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox") == 3

    changed = batch([item("1", "a"), item("2", "B"), item("4", "d")], deletes=["3"], position=2)
    result = (await sink.apply(changed))[ITEMS]
    assert result == ApplyResult(inserted=1, updated=1, deleted=1, unchanged=1)
    events = await pool.fetch("SELECT key, op, origin FROM syncd.outbox WHERE id > 3 ORDER BY key")
    assert [tuple(e) for e in events] == [("2", "update", "syncd"), ("3", "delete", "syncd"), ("4", "insert", "syncd")]
    audit = await pool.fetchrow("SELECT changed_fields FROM syncd.audit_log WHERE key = '2' AND op = 'update'")
    assert audit["changed_fields"] == ["title"]


async def test_duplicate_keys_in_one_batch_keep_the_last(pool: asyncpg.Pool) -> None:
    """Two versions of one key in a batch never raise 21000; the later one wins."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    await sink.apply(batch([item("1", "old"), item("1", "new")]))
    await sink.apply(batch([item("1", "newer"), item("1", "newest")], position=2))
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '1'") == "newest"


async def test_checkpoint_commits_with_the_rows(pool: asyncpg.Pool) -> None:
    """The checkpoint is stored by the batch's own transaction."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    await sink.apply(batch([item("1", "a")], position=7))
    assert await sink.load_checkpoint("lowdb", "workspace") == {"version": 7}


async def test_an_edit_stores_checkpoint_values_that_look_like_sql_verbatim(pool: asyncpg.Pool) -> None:
    """An edit's one statement binds its checkpoint as parameters: quotes, dollar tags, backslashes stay data."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    stream = "it's $q$ a; stream"
    position = {
        "path": "x'); DROP TABLE syncd.checkpoints; --",
        "tags": "$q$ $q1$ $q3$ $q4$ \\ $$",
        "end": "ends $q",
        "u": "é☃",
    }
    changes = TableChanges(ITEMS, ITEM_COLUMNS, ("id",), [item("1", "a")], [])
    await sink.apply(Batch(Checkpoint("lowdb", stream, position), [changes]))
    assert await sink.load_checkpoint("lowdb", stream) == position
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '1'") == "a"


async def test_stale_epoch_cannot_commit(pool: asyncpg.Pool) -> None:
    """Once another instance takes over, the old sink's transactions abort and write nothing."""
    old = PostgresSink(pool, await leader_epoch(pool))
    await old.apply(batch([item("1", "a")]))
    new = PostgresSink(pool, await leader_epoch(pool))
    with pytest.raises(Fenced):
        await old.apply(batch([item("1", "stale"), item("9", "stale")], position=2))
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '1'") == "a"
    assert await pool.fetchval(f"SELECT count(*) FROM {ITEMS}") == 1
    assert await old.load_checkpoint("lowdb", "workspace") == {"version": 1}
    await new.apply(batch([item("1", "fresh")], position=3))
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '1'") == "fresh"


async def test_connection_killed_mid_transaction_leaves_old_state(pool: asyncpg.Pool, dsn: str) -> None:
    """A backend terminated inside the apply transaction rolls everything back; a re-run succeeds."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    await sink.apply(batch([item("1", "a")]))
    before = await table_state(pool)

    # Hold the leader row so the apply blocks inside its transaction (at fence), then kill it there.
    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM syncd.leader FOR UPDATE")
        big = batch([item(str(i), f"v{i}") for i in range(1, 2001)], position=2)
        apply = asyncio.create_task(sink.apply(big))
        pid = await _wait_for_blocked_backend(pool)
        await blocker.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(SinkUnavailable):
            await apply
        await tx.rollback()
    finally:
        await blocker.close()

    assert await table_state(pool) == before
    assert await sink.load_checkpoint("lowdb", "workspace") == {"version": 1}
    assert (await sink.apply(big))[ITEMS] == ApplyResult(inserted=1999, updated=1)
    assert await pool.fetchval(f"SELECT count(*) FROM {ITEMS}") == 2000


async def _wait_for_blocked_backend(pool: asyncpg.Pool) -> int:
    # Polled outside the blocker's transaction: pg_stat_activity is snapshotted per transaction.
    for _ in range(1000):  # 10 s: generous for a loaded CI machine, instant otherwise
        pid = await pool.fetchval(
            """SELECT pid FROM pg_stat_activity
                WHERE wait_event_type = 'Lock' AND query LIKE '%syncd.fence%' LIMIT 1"""
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("the apply transaction never blocked on the leader row")


async def test_signals_partitions_are_created_for_old_rows(pool: asyncpg.Pool) -> None:
    """A batch reaching a month with no partition yet creates it inside the transaction."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    columns = ("ts", "signal_key", "asset", "row_hash")
    ts = datetime(2019, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [(ts + timedelta(seconds=i), f"k{i}", "PETR4", b"h") for i in range(3)]
    changes = TableChanges("signals.tp_capital_signals", columns, ("ts", "signal_key"), rows)
    await sink.apply(Batch(Checkpoint("questdb", "questdb:tp_capital_signals", {}), [changes]))
    assert await pool.fetchval("SELECT count(*) FROM signals.tp_capital_signals_p201903") == 3


async def test_a_key_committed_between_probe_and_copy_is_merged_not_rejected(pool: asyncpg.Pool) -> None:
    """The direct COPY trusts the key-range probe; a writer committing that key meanwhile costs a retry."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    columns = ("ts", "signal_key", "asset", "row_hash")
    ts = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [(ts + timedelta(seconds=i), f"k{i}", "PETR4", b"h") for i in range(SMALL_BATCH + 1)]
    table = "signals.tp_capital_signals"
    await pool.execute(f"SELECT signals.ensure_partitions('{table}', $1, $1)", ts)
    other = await pool.acquire()
    try:
        writer = other.transaction()
        await writer.start()
        await other.execute(
            f"INSERT INTO {table} (ts, signal_key, asset, row_hash) VALUES ($1, 'k1', 'OLD', 'x')", rows[1][0]
        )
        changes = TableChanges(table, columns, ("ts", "signal_key"), rows)
        applying = asyncio.create_task(sink.apply(Batch(Checkpoint("questdb", "q", {"n": 1}), [changes])))
        await _blocked_on_lock(pool)
        await writer.commit()
        result = (await asyncio.wait_for(applying, 30))[table]
    finally:
        await pool.release(other)
    assert result == ApplyResult(inserted=SMALL_BATCH, updated=1)
    assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE asset = 'PETR4'") == SMALL_BATCH + 1


async def _blocked_on_lock(pool: asyncpg.Pool) -> None:
    for _ in range(3000):
        if await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the COPY never waited for the other writer's key")


async def test_large_batches_take_the_copy_and_merge_paths_with_the_same_results(pool: asyncpg.Pool) -> None:
    """Above SMALL_BATCH rows: direct COPY on first load, key stage + merge after; counts and events exact."""
    sink = PostgresSink(pool, await leader_epoch(pool))
    n = SMALL_BATCH * 2
    first = batch([item(f"{i:04d}", "a") for i in range(n)])
    assert (await sink.apply(first))[ITEMS] == ApplyResult(inserted=n)
    assert (await sink.apply(first))[ITEMS] == ApplyResult(unchanged=n)
    changed = [item(f"{i:04d}", "b" if i % 10 == 0 else "a") for i in range(n)] + [item("new", "x")]
    result = (await sink.apply(batch(changed, deletes=["0001"], position=2)))[ITEMS]
    assert result == ApplyResult(inserted=1, updated=n // 10, unchanged=n - n // 10, deleted=1)
    assert await pool.fetchval(f"SELECT count(*) FROM {ITEMS} WHERE title = 'b'") == n // 10
    ops = await pool.fetch("SELECT op, count(*) FROM syncd.outbox GROUP BY op ORDER BY op")
    assert [tuple(r) for r in ops] == [("delete", 1), ("insert", n + 1), ("update", n // 10)]


async def test_a_large_batch_repeating_keys_keeps_the_last_on_every_path(pool: asyncpg.Pool) -> None:
    """The straight COPY leaves deduplication to the primary key: a repeated key falls back to the merge.

    Over a text key (guarded COPY), over signals' timestamp key (unguarded, the batch retried), and
    where the batch also brings ties of the probed leading key (ts not unique): last version wins.
    """
    sink = PostgresSink(pool, await leader_epoch(pool))
    n = SMALL_BATCH * 2
    items = [item(f"{i:04d}", "a") for i in range(n)] + [item("0007", "last")]
    assert (await sink.apply(batch(items)))[ITEMS] == ApplyResult(inserted=n)
    assert await pool.fetchval(f"SELECT title FROM {ITEMS} WHERE id = '0007'") == "last"

    table = "signals.tp_capital_signals"
    columns = ("ts", "signal_key", "asset", "row_hash")
    ts = datetime(2025, 5, 6, tzinfo=UTC)
    signals = [(ts + timedelta(seconds=i // 2), f"k{i}", "A", b"1") for i in range(n)]
    changes = TableChanges(table, columns, ("ts", "signal_key"), [*signals, (signals[5][0], "k5", "B", b"2")])
    first = await sink.apply(Batch(Checkpoint("questdb", "q", {"n": 1}), [changes]))
    assert first[table] == ApplyResult(inserted=n)
    # The next batch starts at the last stored second (two rows there already, one of them new).
    tail = signals[-1][0]
    later = [(tail, f"k{n - 1}", "A", b"1"), (tail, "t0", "A", b"1")]
    later += [(tail + timedelta(seconds=1 + i), f"t{i + 1}", "A", b"1") for i in range(n)]
    second = await sink.apply(
        Batch(Checkpoint("questdb", "q", {"n": 2}), [TableChanges(table, columns, ("ts", "signal_key"), later)])
    )
    assert second[table] == ApplyResult(inserted=n + 1, unchanged=1)
    assert await pool.fetchval(f"SELECT asset FROM {table} WHERE signal_key = 'k5'") == "B"
    assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 2 * n + 1


CATEGORIES = "workspace.workspace_categories"
CATEGORY_COLUMNS = ("id", "name", "row_hash")


def edit(
    items: list[tuple[object, ...]],
    categories: Sequence[str] = (),
    position: int = 1,
    *,
    gone_items: Sequence[str] = (),
    gone_categories: Sequence[str] = (),
) -> Batch:
    """A small two-table batch of the workspace file, as the LowDB source sends an edit."""
    return Batch(
        Checkpoint("lowdb", "workspace", {"version": position}),
        [
            TableChanges(
                CATEGORIES,
                CATEGORY_COLUMNS,
                ("id",),
                [(c, c, c.encode()) for c in categories],
                [(k,) for k in gone_categories],
            ),
            TableChanges(ITEMS, ITEM_COLUMNS, ("id",), items, [(k,) for k in gone_items]),
        ],
        mirror_of="workspace",
    )


@dataclass
class Sent:
    """What a pool's connections sent, as `(statement, error or None)` pairs."""

    statements: list[tuple[str, BaseException | None]] = field(default_factory=list)

    def applied(self) -> list[tuple[str, BaseException | None]]:
        """The statements since the last call, without the pool's reset and the sink's catalog lookup."""
        sent, self.statements[:] = list(self.statements), []
        return [(q, e) for q, e in sent if "pg_advisory_unlock_all" not in q and "pg_attribute" not in q]


@pytest.fixture
async def logged(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, Sent]]:
    """A one-connection pool on the test's database whose every statement is recorded."""
    sent = Sent()

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        conn.add_query_logger(lambda logged: sent.statements.append((logged.query, logged.exception)))

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=init)
    assert pool is not None
    try:
        yield pool, sent
    finally:
        await pool.close()


def one_statement(sent: Sent) -> str:
    """The single statement an apply sent, which succeeded (fails on anything else)."""
    [(statement, error)] = sent.applied()
    assert error is None
    assert statement.startswith("WITH guard")
    return statement


async def test_an_edit_is_one_statement_with_exact_counts(logged: tuple[asyncpg.Pool, Sent]) -> None:
    """A small batch of two tables (inserts, an update, an unchanged row, deletes) is one statement.

    Its counts tell inserted, updated, unchanged and deleted rows apart per table, and the checkpoint
    commits with them. The items name a category, deleted at last while they use it (a batch of
    deletes only): syncd mirroring a file is exempt from the category rule (a BEFORE row trigger
    reading syncd.origin), in one statement as in several.
    """
    pool, sent = logged
    sink = PostgresSink(pool, await leader_epoch(pool))
    sent.applied()
    first = await sink.apply(edit([item("1", "a"), item("2", "b"), item("3", "c")], ["dashboard", "kept", "old"]))
    assert first == {CATEGORIES: ApplyResult(inserted=3), ITEMS: ApplyResult(inserted=3)}
    one_statement(sent)
    second = edit(
        [item("1", "a"), item("2", "B"), item("4", "d")], ["new"], 2, gone_items=["3"], gone_categories=["old"]
    )
    assert await sink.apply(second) == {
        CATEGORIES: ApplyResult(inserted=1, deleted=1),
        ITEMS: ApplyResult(inserted=1, updated=1, unchanged=1, deleted=1),
    }
    one_statement(sent)
    only_deletes = edit([], [], 3, gone_categories=["dashboard"])
    assert await sink.apply(only_deletes) == {CATEGORIES: ApplyResult(deleted=1), ITEMS: ApplyResult()}
    one_statement(sent)
    assert await table_state(pool) == [(k, t, item(k, t)[-1]) for k, t in (("1", "a"), ("2", "B"), ("4", "d"))]
    assert await pool.fetchval(f"SELECT array_agg(id ORDER BY id) FROM {CATEGORIES}") == ["kept", "new"]
    assert await sink.load_checkpoint("lowdb", "workspace") == {"version": 3}


async def test_an_edit_commits_nothing_when_fenced_refused_or_promoted(logged: tuple[asyncpg.Pool, Sent]) -> None:
    """The one statement is all or nothing: a stale epoch, a row PostgreSQL refuses, a promoted file.

    Each leaves neither rows nor checkpoint behind, and is classified as before: Fenced, ModeChanged,
    and BatchRejected naming the refused row (found through a statement per table and the bisect).
    """
    pool, sent = logged
    sink = PostgresSink(pool, await leader_epoch(pool))
    await sink.apply(edit([item("1", "a")], ["c"]))
    before = await table_state(pool), await pool.fetch(f"SELECT * FROM {CATEGORIES}")

    async def unchanged() -> bool:
        after = await table_state(pool), await pool.fetch(f"SELECT * FROM {CATEGORIES}")
        return after == before and await sink.load_checkpoint("lowdb", "workspace") == {"version": 1}

    sent.applied()
    with pytest.raises(BatchRejected) as rejected:
        await sink.apply(edit([item("1", "changed"), item("2", "   ")], ["d"], 2, gone_categories=["c"]))
    assert rejected.value.table == ITEMS
    assert rejected.value.sqlstate == "23514"
    assert [r.key for r in rejected.value.rows] == [("2",)]
    statement, error = sent.applied()[0]
    assert statement.startswith("WITH guard")
    assert isinstance(error, asyncpg.CheckViolationError)
    assert await unchanged()

    await pool.execute("UPDATE syncd.cutover SET mode = 'pg-primary' WHERE name = 'workspace'")
    sent.applied()
    with pytest.raises(ModeChanged):
        await sink.apply(edit([item("2", "b")], ["d"], 3))
    [(statement, error)] = sent.applied()
    assert statement.startswith("WITH guard")
    assert isinstance(error, asyncpg.PostgresError)
    assert error.sqlstate == "SY002"
    assert await unchanged()
    await pool.execute("UPDATE syncd.cutover SET mode = 'mirror' WHERE name = 'workspace'")

    await leader_epoch(pool)
    sent.applied()
    with pytest.raises(Fenced):
        await sink.apply(edit([item("2", "b")], ["d"], 4, gone_items=["1"]))
    [(statement, error)] = sent.applied()
    assert statement.startswith("WITH guard")
    assert isinstance(error, asyncpg.PostgresError)
    assert error.sqlstate == "SY001"
    assert await unchanged()


async def test_an_edit_keeps_the_files_updated_at_and_is_captured_as_syncd(logged: tuple[asyncpg.Pool, Sent]) -> None:
    """The BEFORE row triggers of the one statement see origin 'syncd', as do its capture triggers.

    touch_updated_at leaves the file's updated_at as it is only for syncd's writes, and
    item_category_exists lets only syncd's items name a missing category: were a row written
    before set_config ran, the insert would be refused and the update given now().
    """
    pool, sent = logged
    sink = PostgresSink(pool, await leader_epoch(pool))
    columns = (*ITEM_COLUMNS, "updated_at")
    stamped = T0 + timedelta(days=1)

    def changes(title: str) -> TableChanges:
        return TableChanges(ITEMS, columns, ("id",), [(*item("1", title), stamped)])

    sent.applied()
    await sink.apply(Batch(Checkpoint("lowdb", "workspace", {"version": 1}), [changes("a")]))
    one_statement(sent)
    await sink.apply(Batch(Checkpoint("lowdb", "workspace", {"version": 2}), [changes("b")]))
    one_statement(sent)
    assert await pool.fetchval(f"SELECT updated_at FROM {ITEMS} WHERE id = '1'") == stamped
    captured = await pool.fetch("SELECT op, origin FROM syncd.audit_log ORDER BY id")
    assert [tuple(r) for r in captured] == [("insert", "syncd"), ("update", "syncd")]
    assert await pool.fetchval("SELECT array_agg(DISTINCT origin) FROM syncd.outbox") == ["syncd"]


async def test_a_table_written_by_two_parts_of_a_batch_takes_a_statement_each(
    logged: tuple[asyncpg.Pool, Sent],
) -> None:
    """Two collections of a generic file share syncd.documents: an edit of one is still one statement,
    a batch changing both goes as a statement per part (one statement would merge their changes)."""
    pool, sent = logged
    sink = PostgresSink(pool, await leader_epoch(pool))
    columns = ("collection", "id", "doc", "row_hash")

    def documents(*versions: tuple[str, str]) -> Batch:
        tables = [
            TableChanges("syncd.documents", columns, ("collection", "id"), [(c, "1", {"v": v}, v.encode())])
            if v
            else TableChanges("syncd.documents", columns, ("collection", "id"))
            for c, v in versions
        ]
        return Batch(Checkpoint("lowdb", "generic", {"version": 1}), tables)

    sent.applied()
    assert await sink.apply(documents(("a", "1"), ("b", ""))) == {"syncd.documents": ApplyResult(inserted=1)}
    one_statement(sent)
    assert await sink.apply(documents(("a", "2"), ("b", "1"))) == {
        "syncd.documents": ApplyResult(inserted=1, updated=1)
    }
    assert sent.applied()[0][0] == "BEGIN;"
    stored = await pool.fetch("SELECT collection, doc FROM syncd.documents ORDER BY collection")
    assert [tuple(r) for r in stored] == [("a", {"v": "2"}), ("b", {"v": "1"})]


async def test_an_edit_holding_records_back_stores_them_in_its_one_statement(
    logged: tuple[asyncpg.Pool, Sent],
) -> None:
    """Quarantined records ride in the edit's statement: raw JSON as it was, the batch's position
    for a record that names none, its own for one that does."""
    pool, sent = logged
    sink = PostgresSink(pool, await leader_epoch(pool))
    raw = {"id": "2", "title": None, "tags": [1, [2, "x"]], "note": "it's $q$ \\ é"}
    held = [
        QuarantinedRecord(ITEMS, "2", raw, "title: missing"),
        QuarantinedRecord(ITEMS, None, [1, 2], "not an object", {"at": 7}),
    ]
    changes = TableChanges(ITEMS, ITEM_COLUMNS, ("id",), [item("1", "a")])
    sent.applied()
    await sink.apply(Batch(Checkpoint("lowdb", "workspace", {"version": 3}), [changes], quarantine=held))
    one_statement(sent)
    stored = await pool.fetch(
        "SELECT source, stream, table_name, key, raw, reason, position FROM syncd.quarantine ORDER BY id"
    )
    assert [tuple(r) for r in stored] == [
        ("lowdb", "workspace", ITEMS, "2", raw, "title: missing", {"version": 3}),
        ("lowdb", "workspace", ITEMS, None, [1, 2], "not an object", {"at": 7}),
    ]
