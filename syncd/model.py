"""Change, Batch and Checkpoint: the only types sources and the sink share."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = tuple[Any, ...]
"""One row of a table, its values in `TableChanges.columns` order."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a stream has got to; committed in the same transaction as the rows it covers."""

    source: str
    stream: str
    position: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TableChanges:
    """Upserts and deletes for one table. Upsert rows carry every column, `row_hash` included."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    upserts: Sequence[Row] = ()
    deletes: Sequence[Row] = ()
    """Key tuples of rows to delete, in `key` order."""

    def __post_init__(self) -> None:
        missing = [k for k in (*self.key, "row_hash") if k not in self.columns]
        if missing:
            raise ValueError(f"{self.table}: columns lack {missing}")

    @property
    def size(self) -> int:
        """Rows this entry touches at most."""
        return len(self.upserts) + len(self.deletes)


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one source version produced: applied in ONE transaction with its checkpoint.

    Tables are applied in order for upserts and in reverse order for deletes, so parents
    precede children on the way in and follow them on the way out.
    """

    checkpoint: Checkpoint
    tables: Sequence[TableChanges] = ()
    observed_at: float | None = None
    """Monotonic time the source saw the change (file event or poll), for apply latency."""
    source_time: float | None = None
    """Unix time of the newest source row in the batch, for event lag."""
    quarantine: Sequence[QuarantinedRecord] = field(default=())
    mirror_of: str | None = None
    """Cutover unit (LowDB file name) that must still be in `mirror` for this batch to commit."""
    progress: LoadProgress | None = field(default=None, compare=False)
    """A first load's counters: the sink advances `staged` as its COPYs take the rows."""

    @property
    def size(self) -> int:
        """Rows the batch touches at most."""
        return sum(t.size for t in self.tables)


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    """A record held back with its raw form and reason, written in the batch's transaction."""

    table: str
    key: str | None
    raw: Any
    reason: str
    position: Mapping[str, Any] | None = None
    """Where the source holds the record; None: the batch's checkpoint position."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a committed batch did to PostgreSQL."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def __add__(self, other: ApplyResult) -> ApplyResult:
        return ApplyResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.unchanged + other.unchanged,
        )


@dataclass(slots=True)
class LoadStats:
    """What one load did (a `syncd backfill` run, a stream's initial catch-up): pgloader's summary."""

    table: str
    rows: int = 0
    seconds: float = 0.0
    sink_seconds: float = 0.0
    total: int = 0
    resumed: bool = False
    applied: dict[str, ApplyResult] = field(default_factory=dict)
    """What PostgreSQL did, per PostgreSQL table (inserted, updated, deleted, unchanged)."""
    quarantined: int = 0

    def add(self, batch: Batch, results: Mapping[str, ApplyResult]) -> None:
        """Count a committed batch: its rows read, what PostgreSQL did per table, its quarantined records."""
        self.rows += batch.size
        self.quarantined += len(batch.quarantine)
        for table, result in results.items():
            self.applied[table] = self.applied.get(table, ApplyResult()) + result

    def as_json(self) -> dict[str, Any]:
        """Summary document (the backfill's last line, the catch-up's log line)."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        return {
            "table": self.table,
            "rows": self.rows,
            "total": self.total,
            "tables": {t: dataclasses.asdict(r) for t, r in self.applied.items()},
            "quarantined": self.quarantined,
            "seconds": round(self.seconds, 3),
            "sink_seconds": round(self.sink_seconds, 3),
            "rows_per_second": round(rate),
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a source's initial snapshot/backlog has got: `total` is None when unknown.

    A source whose catch-up commits batch by batch (QuestDB) counts records `read`. A load that is
    one transaction (a LowDB file's start-up diff) does two passes, both counted: records `read`
    (parsed, checked, hashed) out of `total`, then rows `staged` (taken by its COPY) out of
    `to_stage` (its upserts; `total` until the diff has counted them)."""

    read: int = 0
    total: int | None = None
    staged: int | None = None
    """None: the source's batches commit as they go, so nothing is staged apart."""
    to_stage: int | None = None

    def fraction(self) -> float | None:
        """Share of the catch-up's work done, 0..1; None while the total is unknown."""
        if not self.total:
            return None
        if self.staged is None:
            return min(1.0, self.read / self.total)
        stage = self.total if self.to_stage is None else self.to_stage
        return min(1.0, (self.read + self.staged) / (self.total + stage))


STAGE_STEP = 10_000
"""A first load's COPY counts its rows this many at a time (per row stays in C)."""


class LoadProgress:
    """The live counters of a load done in one transaction, advanced by the threads doing it:
    the source sets `total`, its diff `read` (from a worker thread: plain int stores), the sink
    `staged`. `/status` reads them while the load runs, through the source's `progress`."""

    __slots__ = ("read", "staged", "to_stage", "total")

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.read = 0
        self.staged = 0
        self.to_stage: int | None = None

    def snapshot(self) -> Progress:
        """The counters now, frozen."""
        return Progress(self.read, self.total, self.staged, self.to_stage)

    def feed(self, rows: Sequence[Any]) -> Iterator[Any]:
        """`rows` for a COPY, `staged` advancing a step at a time as the COPY takes them."""
        steps = range(0, len(rows), STAGE_STEP)
        return itertools.chain.from_iterable(map(self._step, itertools.repeat(rows), steps))

    def _step(self, rows: Sequence[Any], start: int) -> Sequence[Any]:
        chunk = rows[start : start + STAGE_STEP]
        self.staged += len(chunk)
        return chunk
