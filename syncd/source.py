"""Sources turn an upstream store into Batches; they never write PostgreSQL themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from syncd.errors import BatchRejected
from syncd.model import Batch, Progress


class Health(Protocol):
    """What a running source tells /status beyond its batches."""

    @property
    def in_sync_at(self) -> float | None:
        """Unix time at which the source last found PostgreSQL holding all it has; None if unknown.

        Quiet sources commit no batches: this keeps `seconds_since_last_success` about health,
        not about traffic."""

    @property
    def quarantined(self) -> int:
        """Records of this stream held in `syncd.quarantine` (their keys wait for an operator)."""

    @property
    def source_error(self) -> str | None:
        """Why the last read of the source failed (file missing, QuestDB down); None when it succeeded."""

    @property
    def pending_since(self) -> float | None:
        """Monotonic time since which the source has seen changes not yet handed over; None if none.

        The progress watchdog fails a stream that sits on such changes for too long."""

    @property
    def progress(self) -> Progress:
        """How far the initial snapshot/backlog has got (read, total, staged), as of now.

        Read whenever /status is asked, a load in one transaction included: never blocks."""


class Source(Health, Protocol):
    """One stream. The runner applies each yielded batch, then calls `committed` before the next."""

    source: str
    """Kind of store: `lowdb` or `questdb`."""
    stream: str
    """Stream name, unique per daemon: the LowDB entry's name, or `questdb:<table>`."""

    async def open(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Prepare to produce batches after `checkpoint` (None: from the beginning)."""

    def batches(self) -> AsyncIterator[Batch]:
        """Batches in commit order; the first ones bring PG up to the source's current state."""

    def committed(self, batch: Batch) -> None:
        """`batch` is durable in PostgreSQL: advance the in-memory position past it."""

    def rejected(self, batch: Batch, error: BatchRejected) -> None:
        """PostgreSQL refused `batch`: forget it; the next batch is built from the source's state then.

        `error.rows` names the rows refused on their own: the next batch quarantines them."""

    @property
    def caught_up(self) -> bool:
        """True once the initial snapshot/backlog has been applied (drives /readyz)."""

    async def close(self) -> None:
        """Release files, sessions and tasks."""
