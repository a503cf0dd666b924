"""Which table the poller reads, and whether QuestDB has applied everything committed to it.

Measured on the real servers (README "QuestDB, measured"): upstream's delete rebuilds the table
(CREATE AS, DROP, RENAME), and the rebuilt table can read empty for a few milliseconds after the
RENAME, until its WAL is applied. 9.x gives the new table a new `tables().id`; 8.2.0 keeps
answering the old id, but every version restarts the table's WAL `sequencerTxn`. So a rebuild is
a changed id or a sequencer that went back, and a row count is only trusted, and a reconcile only
run, once `wal_tables()` shows the writer past every commit the previous look saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.questdb.reader import QuestdbReader

_NAME_COLUMNS = ("table_name", "name", "table")  # tables() renamed its name column over the versions


@dataclass(frozen=True, slots=True)
class TableState:
    """One look at a table: its id, WAL position (None without WAL) and row count."""

    table_id: int | None
    writer_txn: int | None
    sequencer_txn: int | None
    count: int

    def applied_through(self, target: int | None) -> bool:
        """WAL applied up to `target` (default: everything committed now); a table without WAL is."""
        if self.writer_txn is None or self.sequencer_txn is None:
            return True
        return self.writer_txn >= (self.sequencer_txn if target is None else target)


@dataclass(frozen=True, slots=True)
class Look:
    """What one look found: why the table is not the one last seen (or None), and whether every
    row committed by the previous look is readable now."""

    reason: str | None
    applied: bool


class TableWatch:
    """Follows one table across polls; the checkpoint position keeps id, WAL position and count."""

    def __init__(self, reader: QuestdbReader, table: str) -> None:
        self.reader, self.table = reader, table
        # The sequencer txn of the previous look (in memory): applied once the writer reaches it,
        # so a steady stream of commits, always a few ms ahead of the writer, never blocks.
        self._target: int | None = None

    async def look(self, position: dict[str, Any]) -> Look:
        """Read the table's state, compare it with `position`, then store it there."""
        state = await table_state(self.reader, self.table)
        reason = _rebuilt(state, position)
        if reason is not None:
            self._target = state.sequencer_txn  # the new table: its own commits so far
            position.pop("row_count", None)  # the old table's count says nothing about the new one
        applied = state.applied_through(self._target)
        if reason is None and applied and state.count < position.get("row_count", 0):
            reason = "shrunk"
        if applied:
            self._target = state.sequencer_txn
            position["row_count"] = state.count
        if state.table_id is not None:
            position["table_id"] = state.table_id
        if state.sequencer_txn is not None:
            position["sequencer_txn"] = state.sequencer_txn
        return Look(reason, applied)


def _rebuilt(state: TableState, position: Mapping[str, Any]) -> str | None:
    old_id, old_txn = position.get("table_id"), position.get("sequencer_txn")
    if old_id is not None and state.table_id is not None and state.table_id != old_id:
        return "identity"
    if old_txn is not None and state.sequencer_txn is not None and state.sequencer_txn < old_txn:
        return "identity"
    return None


async def table_state(reader: QuestdbReader, table: str) -> TableState:
    """Read id, WAL position and count of `table` (the count last: it then holds every applied row)."""
    wal = await reader.query(f"SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = '{table}'")
    table_id = await _table_id(reader, table)
    count = (await reader.query(f"SELECT count(*) FROM {table}")).value(int)
    if not wal.rows:
        return TableState(table_id, None, None, count)
    return TableState(table_id, wal.value(int, 0, 0), wal.value(int, 0, 1), count)


async def _table_id(reader: QuestdbReader, table: str) -> int | None:
    result = await reader.query("SELECT * FROM tables()")
    name = next((c for c in _NAME_COLUMNS if c in result.columns), None)
    if name is None or "id" not in result.columns:
        return None
    ni, ii = result.column(name), result.column("id")
    return next((int(r[ii]) for r in result.rows if r[ni] == table), None)
