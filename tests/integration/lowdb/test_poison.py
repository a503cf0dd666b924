"""Poison records (what Node reads but PostgreSQL or orjson cannot hold) are contained per record.

Real LowdbSource, StreamRunner, PostgresSink and PostgreSQL: each kind is quarantined under its key
with its reason while the rest of the file keeps flowing, PostgreSQL keeps the key's last good
version (never a delete), and once the owner fixes the record and the operator replays it, the fix
flows without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncd import quarantine as q
from syncd.config import LowdbSettings
from syncd.cutover.verify import verify_file
from syncd.lowdb.source import LowdbSource
from syncd.sink.postgres import PostgresSink
from tests.integration.conftest import eventually, running
from tests.integration.lowdb.test_source import equals
from tests.lowdb_files import item, write_v7


def stringify(doc: Any) -> bytes:
    """`JSON.stringify(doc, null, 2)`'s bytes (Python's json agrees; orjson cannot nest 300 deep)."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


MARK = "POISON-MARK"
"""A title placeholder replaced by the poison bytes after serialisation."""

Kind = tuple[dict[str, Any], Callable[[bytes], bytes], str]

KINDS: dict[str, Kind] = {
    "nul": ({"title": "a\u0000b"}, lambda b: b, "title holds a NUL character"),
    "deep": ({"metadata": nested(300)}, lambda b: b, "nested deeper than 250 levels"),
    "out-of-range number": ({"score": MARK}, lambda b: b.replace(f'"{MARK}"'.encode(), b"1e400"), "number 1e400"),
    "invalid utf-8": ({"title": MARK}, lambda b: b.replace(MARK.encode(), b"caf\xe9 \xff"), "invalid UTF-8 at byte"),
    "lone surrogate": ({"title": MARK}, lambda b: b.replace(MARK.encode(), b"\\ud83d"), "lone UTF-16 surrogate"),
    "too large": ({"title": "x" * 300_000}, lambda b: b, "over the 256.0 KiB limit"),
}


def write(path: Path, records: list[dict[str, Any]], poison: Callable[[bytes], bytes] = lambda b: b) -> None:
    """lowdb@7's write of `records` with the poison bytes patched in."""
    write_v7(path, poison(stringify({"items": records, "categories": []})))


async def held(pool: asyncpg.Pool) -> list[q.Entry]:
    """The held quarantine rows."""
    return await q.list_entries(pool, status="held")


@pytest.mark.parametrize("kind", list(KINDS))
async def test_poison_is_quarantined_the_file_flows_and_the_fix_flows(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path, kind: str
) -> None:
    """The poisoned key keeps its last good row; other edits flow; fix + replay applies the fix."""
    fields, patch, reason = KINDS[kind]
    path = tmp_path / "library.json"
    a, b, p = item("a"), item("b"), item("p", "good version")
    write(path, [a, b, p])
    settings = LowdbSettings(name="workspace", path=path, layout="workspace", max_record_size=256 * 1024)
    async with running(LowdbSource(settings, pool=pool), sink) as runner:
        await eventually(equals(pool, [a, b, p]), what="initial file in PG")
        write(path, [a, b, {**p, **fields}], patch)
        [entry] = await eventually(lambda: held(pool), what=f"{kind} quarantined")
        assert entry.key == "p"
        assert entry.table_name == "workspace.workspace_items"
        assert entry.reason.startswith("items[2]: ")
        assert reason in entry.reason
        assert reason in entry.raw["error"]
        assert '"id": "p"' in entry.raw["text"]
        # Another record's edit in the same file flows; PostgreSQL keeps p's last good version.
        a = {**a, "title": "edited while p is held"}
        write(path, [a, b, {**p, **fields}], patch)
        await eventually(equals(pool, [a, b, p]), what="edit of another record applied")
        assert runner.state.last_error is None
        # verify reads the file per record when it must: only the poisoned key differs (invalid, or
        # for a file orjson still parses whole, PostgreSQL's older version of it), nothing else.
        async with pool.acquire() as conn:
            parity = await verify_file(conn, settings)
        [items] = [t for t in parity.tables if t.table == "workspace.workspace_items"]
        assert {*items.invalid, *items.differing} == {"p"}
        assert items.missing_in_pg == ()
        # The owner fixes the record, the operator replays it: it flows, no restart.
        p = {**p, "title": "fixed"}
        write(path, [a, b, p])
        async with pool.acquire() as conn:
            assert await q.resolve(conn, [entry.id], "replayed") == [entry.id]
        await eventually(equals(pool, [a, b, p]), what="fixed record applied")
        assert await held(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM syncd.outbox WHERE op = 'delete'") == 0


async def test_a_first_load_holds_each_value_no_column_holds_and_loads_the_rest(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """Instants outside years 1..9999 (as epoch ms, as text with an offset) among good records in the
    file's first load: held under their keys naming the field, the good ones loaded, the source up."""
    path = tmp_path / "library.json"
    a, b = item("a"), item("b")
    ms, text = item("ms", createdAt=MARK), item("text", createdAt="9999-12-31T23:00:00-05:00")
    write(path, [a, ms, b, text], lambda data: data.replace(f'"{MARK}"'.encode(), b"1e300"))
    async with running(
        LowdbSource(LowdbSettings(name="workspace", path=path, layout="workspace"), pool=pool), sink
    ) as runner:
        await eventually(equals(pool, [a, b]), what="the good records loaded")
        entries = await eventually(lambda: _held_keys(pool, 2), what="both quarantined")
        assert {e.key: e.reason for e in entries} == {
            "ms": "items[1]: createdAt is 1e+300 ms since the epoch, outside years 1..9999",
            "text": "items[3]: createdAt is outside years 1..9999 in UTC: '9999-12-31T23:00:00-05:00'",
        }
        assert {e.raw["createdAt"] for e in entries} == {1e300, "9999-12-31T23:00:00-05:00"}
        a = {**a, "title": "edited while two are held"}
        write(path, [a, ms, b, text], lambda data: data.replace(f'"{MARK}"'.encode(), b"1e300"))
        await eventually(equals(pool, [a, b]), what="a later edit flows")
        assert runner.state.last_error is None
        # The record is held whole (its own JSON): the owner fixes it, the operator replays it.
        fixed = {**text, "createdAt": "9999-12-31T04:00:00.000Z"}
        write(path, [a, ms, b, fixed], lambda data: data.replace(f'"{MARK}"'.encode(), b"1e300"))
        async with pool.acquire() as conn:
            await q.resolve(conn, [e.id for e in entries if e.key == "text"], "replayed")
        await eventually(equals(pool, [a, b, fixed]), what="the fixed record applied")


async def _held_keys(pool: asyncpg.Pool, count: int) -> list[q.Entry]:
    entries = await held(pool)
    return entries if len(entries) == count else []


async def test_a_record_without_a_readable_id_holds_the_collections_deletes(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """Poison in the id itself: quarantined keyless, and no key is deleted meanwhile."""
    path = tmp_path / "library.json"
    a, b, p = item("a"), item("b"), item("p")
    write(path, [a, b, p])
    async with running(LowdbSource(LowdbSettings(name="workspace", path=path, layout="workspace"), pool=pool), sink):
        await eventually(equals(pool, [a, b, p]), what="initial file in PG")
        write(path, [a, b, {**p, "id": MARK}], lambda data: data.replace(MARK.encode(), b"p\xff"))
        [entry] = await eventually(lambda: held(pool), what="keyless poison quarantined")
        assert entry.key is None
        assert "invalid UTF-8" in entry.reason
        b = {**b, "title": "still flows"}
        write(path, [a, b, {**p, "id": MARK}], lambda data: data.replace(MARK.encode(), b"p\xff"))
        await eventually(equals(pool, [a, b, p]), what="edit applied, p not deleted")
        # Written twice, held once: the keyless record is recognised by its quarantined form.
        assert len(await held(pool)) == 1


async def test_large_values_within_the_limit_are_stored_losslessly(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """8 MiB of text and a 200-level object are far from PostgreSQL's limits: stored as they are.

    An integer past 64 bits is read as the double Node reads, and stored as that."""
    path = tmp_path / "library.json"
    big = item("big", "é" * (4 * 1024 * 1024), metadata=nested(200), blob={"k": "z" * 1024}, huge=MARK)
    write(path, [big, item("a")], lambda data: data.replace(f'"{MARK}"'.encode(), b"123456789012345678901234567890"))
    big["huge"] = 1.2345678901234568e29
    async with running(LowdbSource(LowdbSettings(name="workspace", path=path, layout="workspace"), pool=pool), sink):
        await eventually(equals(pool, [big, item("a")]), timeout=30, what="large record stored")
    assert await held(pool) == []


async def test_a_row_postgresql_refuses_is_quarantined_and_the_rest_flows(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path
) -> None:
    """A rule only PostgreSQL knows (a CHECK added by hand): the batch is bisected, the row held."""
    await pool.execute("ALTER TABLE workspace.workspace_items ADD CONSTRAINT no_forbidden CHECK (title <> 'forbidden')")
    path = tmp_path / "library.json"
    a, b, p = item("a"), item("b"), item("p", "fine")
    write(path, [a, b, p])
    async with running(LowdbSource(LowdbSettings(name="workspace", path=path, layout="workspace"), pool=pool), sink):
        await eventually(equals(pool, [a, b, p]), what="initial file in PG")
        a = {**a, "title": "edited in the same version"}
        write(path, [a, b, {**p, "title": "forbidden"}])
        [entry] = await eventually(lambda: held(pool), what="refused row quarantined")
        assert entry.key == "p"
        assert entry.reason.startswith("items[2]: PostgreSQL refused it: [23514]")
        assert "no_forbidden" in entry.reason
        await eventually(equals(pool, [a, b, p]), what="the rest of that version applied")
        p = {**p, "title": "allowed"}
        write(path, [a, b, p])
        async with pool.acquire() as conn:
            await q.resolve(conn, [entry.id], "replayed")
        await eventually(equals(pool, [a, b, p]), what="fixed record applied")


async def test_a_rejected_batch_is_rebuilt_from_the_file_so_a_fix_flows(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal no row is blamed for: the batch is never retried as built, the fixed file flows."""
    monkeypatch.setattr("syncd.stream.REJECTED_RETRY_SECONDS", 0.2)
    path = tmp_path / "library.json"
    a, b = item("a"), item("b")
    write(path, [a, b])
    source = LowdbSource(LowdbSettings(name="workspace", path=path, layout="workspace"), pool=pool)
    async with running(source, sink) as runner:
        await eventually(equals(pool, [a, b]), what="initial file in PG")
        await pool.execute(
            """CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.title = 'refused' THEN RAISE EXCEPTION 'refused by a trigger'; END IF;
               RETURN NEW; END $$;
               CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON workspace.workspace_items
                  FOR EACH ROW EXECUTE FUNCTION public.refuse()"""
        )
        write(path, [{**a, "title": "refused"}, b])
        await eventually(lambda: _async("refused by a trigger" in (runner.state.last_error or "")), what="rejected")
        a = {**a, "title": "accepted"}
        write(path, [a, b])
        await eventually(equals(pool, [a, b]), what="the fixed file applied without a restart")
    assert await held(pool) == []


async def _async(value: Any) -> Any:
    return value
