"""Unit tests: which rows of a QuestDB batch become quarantine records, which stay out, which flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.errors import RejectedRow
from syncd.model import Batch, Checkpoint
from syncd.questdb.refusals import Refusals, key_text
from syncd.questdb.source import signal_changes
from syncd.questdb.sql import SIGNALS_PG_TABLE, signal_row

T0 = datetime(2025, 10, 11, 12, 0, tzinfo=UTC)
STREAM = "questdb:tp_capital_signals"


def signal(i: int, message: str = "ok") -> tuple[object, ...]:
    """A QuestDB signal row (SIGNAL_COLUMNS order), ingested i µs after T0."""
    ts = T0 + timedelta(seconds=i)
    return (ts, "@chan", "Swing Trade", f"A{i}", 1.0, 2.0, 3.0, 4.0, 5.0, 0.5, message, "forwarder",
            T0 + timedelta(microseconds=i))


def refused(row: tuple[object, ...], code: str = "23514") -> RejectedRow:
    """The sink's finding for `row` (a PG row)."""
    return RejectedRow(SIGNALS_PG_TABLE, (row[0], row[1]), bytes(row[-1]), code, "refused")  # type: ignore[arg-type]


def batch_of(rows: list[tuple[object, ...]]) -> Batch:
    """One batch of signal rows, as the poller builds it."""
    return Batch(Checkpoint("questdb", STREAM, {"cursor": {}}), [signal_changes(rows)])


def test_refused_rows_become_records_with_their_position_and_the_rest_flows() -> None:
    rows = [signal(i, "nul \x00" if i == 1 else "ok") for i in range(4)]
    batch = batch_of(rows)
    pg = batch.tables[0].upserts
    refusals = Refusals(STREAM, "tp_capital_signals", None)
    rebuilt = refusals.rebuilt(batch, [refused(pg[1], "22021")])
    assert rebuilt is not None
    assert [r[1] for r in rebuilt.tables[0].upserts] == [pg[i][1] for i in (0, 2, 3)]
    (record,) = rebuilt.quarantine
    assert (record.table, record.key, record.reason) == (SIGNALS_PG_TABLE, pg[1][1], "[22021] refused")
    assert record.position == {"questdb_table": "tp_capital_signals", "ts": "2025-10-11T12:00:01.000000Z",
                               "key": {"signal_key": pg[1][1]}, "row_hash": bytes(pg[1][-1]).hex()}
    assert "\\u0000" in record.raw["text"]  # jsonb cannot hold the NUL: the row is kept as text
    assert record.raw["error"].startswith("record.raw_message holds a NUL")


def test_a_committed_record_holds_its_key_out_of_later_batches_and_no_record_twice() -> None:
    rows = [signal(i) for i in range(3)]
    refusals = Refusals(STREAM, "tp_capital_signals", None)
    first = refusals.rebuilt(batch_of(rows), [refused(batch_of(rows).tables[0].upserts[2])])
    assert first is not None
    refusals.committed(first)
    assert refusals.held == 1
    again = refusals.sift(batch_of(rows).tables[0])  # the rescan reads the same rows
    assert [r[4] for r in again[0].upserts] == ["A0", "A1"]
    assert again[1] == []


def test_a_refusal_of_another_version_or_another_batch_quarantines_nothing() -> None:
    refusals = Refusals(STREAM, "tp_capital_signals", None)
    other = signal_row(signal(9))
    assert refusals.rebuilt(batch_of([signal(0)]), [refused(other)]) is None
    # The same key, another content (row hash): that version was not refused, it flows.
    changed = batch_of([signal(9, "changed")])
    kept, records = refusals.sift(changed.tables[0])
    assert (len(kept.upserts), records) == (1, [])


def test_deleted_table_rows_name_the_deleted_table() -> None:
    deleted_at = T0 + timedelta(hours=1)
    changes = signal_changes([(*signal(1), deleted_at)], deleted=True)
    refusals = Refusals(STREAM, "tp_capital_signals", None)
    rebuilt = refusals.rebuilt(Batch(Checkpoint("questdb", STREAM, {}), [changes]), [refused(changes.upserts[0])])
    assert rebuilt is not None
    assert rebuilt.quarantine[0].position["questdb_table"] == "tp_capital_signals_deleted"  # type: ignore[index]


def test_key_text_escapes_what_a_text_column_cannot_hold() -> None:
    assert key_text("bot-1") == "bot-1"
    assert key_text("bot\x00x") == "bot\\u0000x"
    assert key_text(42) == "42"
