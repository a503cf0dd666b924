"""The typed errors of syncd. Each carries the key, file, row or setting it is about."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""


class ProblemFound(SyncdError):
    """A command ran and found something the operator must look at (exit 1); the message says what."""


class Unreachable(SyncdError, ConnectionError):
    """A service a command needs (the daemon's endpoint, PostgreSQL, QuestDB) does not answer; `what` names it."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} unreachable: {reason}")
        self.what = what
        self.reason = reason


class ConfigError(SyncdError, ValueError):
    """A setting is missing or invalid; `key` is its dotted name, `origin` where it came from."""

    def __init__(self, key: str, origin: str, reason: str) -> None:
        super().__init__(f"config {key} (from {origin}): {reason}")
        self.key = key
        self.origin = origin
        self.reason = reason


class CannotListen(SyncdError, OSError):
    """The ops endpoint cannot bind its address (taken, or not ours): the daemon cannot run."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"http.listen {address}: cannot listen: {reason}")
        self.address = address
        self.reason = reason


class MigrationError(SyncdError):
    """A schema migration cannot be applied; `file` names the migration."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"migration {file}: {reason}")
        self.file = file
        self.reason = reason


class Retryable(SyncdError):
    """A transient failure: the operation may succeed if tried again after `defer` seconds."""

    def __init__(self, message: str, *, defer: float = 0.0) -> None:
        super().__init__(message)
        self.defer = defer


class SourceUnavailable(Retryable, ConnectionError):
    """A source (file, QuestDB) cannot be read right now; `source` names it."""

    def __init__(self, source: str, reason: str, *, defer: float = 0.0) -> None:
        super().__init__(f"source {source} unavailable: {reason}", defer=defer)
        self.source = source
        self.reason = reason


class RetriesExhausted(SyncdError):
    """A one-shot command retried a transient failure for as long as it was allowed to; `last` says the failure."""

    def __init__(self, last: str, attempts: int, seconds: float) -> None:
        super().__init__(f"gave up after {attempts} attempt(s) in {seconds:.0f}s: {last}")
        self.last = last
        self.attempts = attempts
        self.seconds = seconds


class SinkUnavailable(Retryable, ConnectionError):
    """PostgreSQL cannot be reached or dropped the connection mid-batch (SQLSTATE class 08 and kin)."""


class UnreadableFile(Retryable, OSError):
    """A LowDB file is empty, truncated or not JSON right now; it is retried, never taken as empty."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Fenced(SyncdError):
    """This instance's leader epoch is stale: another instance leads, so this one must not write."""

    def __init__(self, epoch: int, detail: str) -> None:
        super().__init__(f"fenced at epoch {epoch}: {detail}")
        self.epoch = epoch


class ModeChanged(SyncdError):
    """A LowDB file's cutover mode changed under a running stream: it stops, the daemon starts the other."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """One row of a batch PostgreSQL refused on its own (found by bisecting the batch)."""

    table: str
    key: tuple[Any, ...]
    """The row's primary key, in `TableChanges.key` order."""
    row_hash: bytes
    """Which version of the row was refused: a changed source record is tried again."""
    sqlstate: str
    reason: str


class BatchRejected(SyncdError):
    """PostgreSQL refused the data of a batch (constraint, cardinality): a bug or a bad row, not transient.

    `rows` are the rows found to be refused on their own, when the batch could be bisected to them.
    """

    def __init__(self, stream: str, table: str, sqlstate: str, detail: str, rows: tuple[RejectedRow, ...] = ()) -> None:
        found = f" ({len(rows)} row(s) refused on their own)" if rows else ""
        super().__init__(f"batch for {stream} rejected on {table} [{sqlstate}]: {detail}{found}")
        self.stream = stream
        self.table = table
        self.sqlstate = sqlstate
        self.detail = detail
        self.rows = rows


class InvalidRecord(SyncdError, ValueError):
    """A source record fails its table spec; `key` may be None when the record has no id."""

    def __init__(self, table: str, key: str | None, reason: str) -> None:
        super().__init__(f"{table} record {key!r}: {reason}")
        self.table = table
        self.key = key
        self.reason = reason


class CutoverRefused(SyncdError):
    """A cutover transition is not safe now; `reasons` says every check that failed."""

    def __init__(self, name: str, reasons: list[str]) -> None:
        super().__init__(f"cutover of {name} refused: " + "; ".join(reasons))
        self.name = name
        self.reasons = reasons


class HandoverAborted(SyncdError):
    """A handover inside promote or rollback could not complete; the file went back to its old mode."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"handover of {name} aborted: {reason}")
        self.name = name
        self.reason = reason


class BackupError(SyncdError):
    """A backup or restore step failed; `step` names it (pg_dump, manifest, …)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class TableMissing(SourceUnavailable):
    """A QuestDB table does not exist right now (e.g. mid-rebuild): transient, retried."""

    def __init__(self, source: str, table: str, *, defer: float = 0.5) -> None:
        super().__init__(source, f"table does not exist [table={table}]", defer=defer)
        self.table = table


class QueryRejected(SyncdError):
    """QuestDB refused a query (HTTP 400 other than a missing table): a bug, not transient."""

    def __init__(self, query: str, message: str, position: int | None) -> None:
        super().__init__(f"QuestDB rejected query at {position}: {message}: {query[:200]}")
        self.query = query
        self.message = message
        self.position = position


class BadCoercion(SyncdError, ValueError):
    """A coercion stated to `syncd quarantine accept` cannot be applied: an unknown field, a value
    its column cannot hold, or values that leave the record invalid (exit 2: a bad argument)."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


class NotAcceptable(ProblemFound):
    """A held record no coercion resolves (no id, a duplicated id, only its text kept, a foreign
    write); the operator fixes it at the source or discards it (exit 1: a refusal)."""

    def __init__(self, quarantine_id: int, reason: str) -> None:
        super().__init__(f"quarantine record {quarantine_id} cannot be accepted: {reason}")
        self.quarantine_id = quarantine_id
        self.reason = reason
