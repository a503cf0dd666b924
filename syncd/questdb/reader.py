"""Reading QuestDB: one small interface, two transports (HTTP `/exec` and PG wire).

Both transports return the same `Result`: column names and QuestDB types, rows as tuples with
timestamps as aware UTC datetimes, NULL/NaN/±Inf doubles as None. Failures are typed: a missing
table (QuestDB's rebuild window) is `TableMissing`, anything transient `SourceUnavailable`, a
refused query `QueryRejected`. Error text is classified, never SQLSTATE: QuestDB's PG wire sends
`00000` for every error.

An `/exec` answer is validated where it is read (`ExecAnswer`, `ExecError`): a body that is not
JSON (a proxy's HTML page), JSON of another shape, a row not as wide as the columns or a value
not of its column's type is `SourceUnavailable` with what was wrong, never rows; so is a value a
caller reads with `Result.value` that is not there or not of the kind it needs.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol, Self, TypeVar

import aiohttp
import orjson
import psycopg
from pydantic import BaseModel, ConfigDict, SkipValidation, ValidationError, model_validator

from syncd.config import QuestdbSettings
from syncd.errors import QueryRejected, SourceUnavailable, TableMissing

SOURCE = "questdb"
_MISSING = re.compile(r"table does not exist \[table=([^\]]+)\]")
_TS_TYPES = frozenset({"TIMESTAMP", "DATE", "TIMESTAMP_NS"})
T = TypeVar("T")
_NUMBER: frozenset[type] = frozenset({float, int, type(None)})
_INTEGER: frozenset[type] = frozenset({int, type(None)})
_TEXT: frozenset[type] = frozenset({str, type(None)})
_CELLS: dict[str, frozenset[type]] = {
    **dict.fromkeys(("DOUBLE", "FLOAT"), _NUMBER),
    **dict.fromkeys(("LONG", "INT", "SHORT", "BYTE"), _INTEGER),
    "BOOLEAN": frozenset({bool}),
    **dict.fromkeys(("STRING", "SYMBOL", "VARCHAR", "CHAR", "UUID", "IPv4", "LONG256", *_TS_TYPES), _TEXT),
}
"""The JSON values `/exec` sends for a column of each QuestDB type (null for NULL); others unchecked."""


class Rows(list[tuple[Any, ...]]):
    """A page of rows. `texts`, when the reader keeps them, holds the same rows as QuestDB sent
    them, timestamps still its µs ISO text: keys and hashes come from those without formatting a
    datetime again (the backfill's hot path)."""

    texts: list[list[Any]] | None = None

    def head(self, n: int) -> Rows:
        """The first `n` rows (and their texts)."""
        out = Rows(self[:n])
        out.texts = None if self.texts is None else self.texts[:n]
        return out


@dataclass(frozen=True, slots=True)
class Result:
    """A query's answer: names and QuestDB type names, then rows in that column order."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> int:
        """Position of column `name`."""
        return self.columns.index(name)

    def value(self, kind: type[T], row: int = 0, column: int = 0) -> T:
        """The value at (`row`, `column`), which must be a `kind`; SourceUnavailable when it is not."""
        found = self.maybe(kind, row, column)
        if found is None:
            raise SourceUnavailable(SOURCE, f"answer holds NULL where a {kind.__name__} belongs")
        return found

    def maybe(self, kind: type[T], row: int = 0, column: int = 0) -> T | None:
        """The value at (`row`, `column`): a `kind` or NULL; SourceUnavailable when it is neither."""
        try:
            found = self.rows[row][column]
        except IndexError:
            where = f"row {row}, column {column}"
            raise SourceUnavailable(SOURCE, f"answer has no {where} ({len(self.rows)} rows)") from None
        if found is not None and (not isinstance(found, kind) or (kind is int and isinstance(found, bool))):
            raise SourceUnavailable(SOURCE, f"answer holds {found!r} where a {kind.__name__} belongs")
        return found


class ExecColumn(BaseModel):
    """One column of an `/exec` answer."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: str


class ExecAnswer(BaseModel):
    """The body `/exec` answers a SELECT with: columns, then rows exactly that wide and typed."""

    columns: tuple[ExecColumn, ...]
    dataset: SkipValidation[list[list[Any]]]
    """Checked per column below, in C-speed passes: a page may hold a hundred thousand values."""

    @model_validator(mode="after")
    def _rows_fit(self) -> Self:
        rows, width = self.dataset, len(self.columns)
        if not isinstance(rows, list) or not set(map(type, rows)) <= {list}:
            raise ValueError("dataset is not a list of rows")
        if not set(map(len, rows)) <= {width}:
            raise ValueError(f"a row is not {width} values wide")
        for i, column in enumerate(self.columns):
            allowed = _CELLS.get(column.type)
            wrong = set(map(type, map(itemgetter(i), rows))) - allowed if allowed is not None and rows else set()
            if wrong:
                found = ", ".join(sorted(t.__name__ for t in wrong))
                raise ValueError(f"column {column.name} ({column.type}) holds {found}")
        return self


class ExecError(BaseModel):
    """The body `/exec` answers a refused query with."""

    error: str
    position: int | str | None = None
    errorPos: int | str | None = None


class QuestdbReader(Protocol):
    """What the poller needs from QuestDB: run one SELECT, close."""

    transport: str

    async def query(self, sql: str) -> Result:
        """Run `sql` and return every row of its answer."""

    async def close(self) -> None:
        """Release the session or connection."""


def parse_timestamp(text: str | None) -> datetime | None:
    """QuestDB's `2025-01-01T00:00:00.000000Z` (or millis for DATE) to an aware UTC datetime."""
    if text is None:
        return None
    return datetime.fromisoformat(text)


def format_timestamp(value: datetime) -> str:
    """An aware datetime as a QuestDB timestamp literal (6 fraction digits, `Z`); valid on PG too."""
    if value.tzinfo is UTC:  # what both readers and asyncpg return: isoformat is ~4x strftime's speed
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def classify_error(query: str, message: str, position: int | None) -> Exception:
    """Map QuestDB's error text to TableMissing (transient) or QueryRejected (a bug)."""
    missing = _MISSING.search(message)
    if missing:
        return TableMissing(SOURCE, missing.group(1))
    return QueryRejected(query, message, position)


def _decoders(types: Sequence[str]) -> list[int]:
    return [i for i, t in enumerate(types) if t in _TS_TYPES]


class HttpReader:
    """`GET /exec` with basic auth; the JSON answer decoded with orjson."""

    transport = "http"

    def __init__(self, settings: QuestdbSettings, *, keep_text: bool = False) -> None:
        self._keep_text = keep_text
        self._url = f"http://{settings.host}:{settings.http_port}/exec"
        credentials = f"{settings.user}:{settings.password.get_secret_value()}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
        # No total bound: a big page streams for as long as it streams; silence is what times out.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.request_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def query(self, sql: str) -> Result:
        """Run `sql` over `/exec`; see the module docstring for the error types."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        try:
            async with self._session.get(self._url, params={"query": sql}) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceUnavailable(SOURCE, f"{type(exc).__name__}: {exc}", defer=0.5) from exc
        return self._decode(sql, status, body)

    def _decode(self, sql: str, status: int, body: bytes) -> Result:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SourceUnavailable(SOURCE, f"HTTP {status}, body is not JSON: {_snippet(body)}", defer=0.5) from None
        refused = _error(document)
        if status >= 500 or (status >= 300 and refused is None):
            detail = refused.error if refused is not None else _snippet(body)
            raise SourceUnavailable(SOURCE, f"HTTP {status}: {detail}", defer=0.5)
        if refused is not None:
            position = refused.position if refused.position is not None else refused.errorPos
            raise classify_error(sql, refused.error, _int_or_none(position))
        try:
            answer = ExecAnswer.model_validate(document)
        except ValidationError as exc:
            raise SourceUnavailable(SOURCE, f"HTTP {status}, not a QuestDB answer: {_first(exc)}", defer=0.5) from None
        names = tuple(c.name for c in answer.columns)
        types = tuple(c.type for c in answer.columns)
        return Result(names, types, self._rows(answer.dataset, _decoders(types), names))

    def _rows(self, dataset: list[list[Any]], stamps: list[int], names: Sequence[str]) -> Rows:
        rows = Rows()
        for raw in dataset:
            row = raw.copy() if self._keep_text else raw
            for i in stamps:
                try:
                    row[i] = parse_timestamp(row[i])
                except ValueError:
                    raise SourceUnavailable(SOURCE, f"column {names[i]}: not a timestamp: {row[i]!r}") from None
            rows.append(tuple(row))
        if self._keep_text:
            rows.texts = dataset
        return rows

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error(document: Any) -> ExecError | None:
    """The refusal an answer carries, if it is one."""
    if not isinstance(document, dict) or "error" not in document:
        return None
    try:
        return ExecError.model_validate(document)
    except ValidationError:
        return None


def _first(exc: ValidationError) -> str:
    """The first thing wrong with an answer, where it was: one line for a log."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


def _snippet(body: bytes) -> str:
    """The start of a body, printable, for a log line."""
    text = " ".join(body[:120].decode("utf-8", "replace").split())
    return repr(text + ("…" if len(body) > 120 else ""))


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int | str) and str(value).lstrip("-").isdigit():
        return int(value)
    return None


class PgWireReader:
    """psycopg over QuestDB's PG wire: autocommit, naive timestamps read as UTC."""

    transport = "pg"

    def __init__(self, settings: QuestdbSettings, *, dsn: str | None = None) -> None:
        self._dsn = dsn
        self._settings = settings
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            s = self._settings
            # libpq counts connect_timeout in whole seconds, at least 2: wait_for holds the real bound.
            kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(2, math.ceil(s.connect_timeout))}
            if self._dsn is None:
                kwargs.update(
                    host=s.host, port=s.pg_port, user=s.user, password=s.password.get_secret_value(), dbname="qdb"
                )
            connecting = psycopg.AsyncConnection.connect(self._dsn or "", **kwargs)
            try:
                self._conn = await asyncio.wait_for(connecting, s.connect_timeout)
            except TimeoutError:
                raise TimeoutError(f"connect: no answer within {s.connect_timeout:g}s") from None
        return self._conn

    async def query(self, sql: str) -> Result:
        """Run `sql` over PG wire; errors classified by text (QuestDB's SQLSTATE is always 00000)."""
        try:
            conn = await self._connect()
            async with conn.cursor(binary=True) as cur:
                await self._bounded(conn, cur.execute(sql.encode()))
                rows = await cur.fetchall() if cur.description else []
                description = cur.description or []
        except (psycopg.OperationalError, TimeoutError, OSError) as exc:
            await self.close()
            raise SourceUnavailable(SOURCE, f"{type(exc).__name__}: {exc}", defer=0.5) from exc
        except psycopg.Error as exc:
            raise classify_error(sql, str(exc), None) from exc
        names = tuple(d.name for d in description)
        types = tuple(_pg_type(d.type_code) for d in description)
        return Result(names, types, [tuple(_utc(v) for v in row) for row in rows])

    async def _bounded(self, conn: psycopg.AsyncConnection[Any], work: Awaitable[Any]) -> None:
        """`work` within request_timeout. Cancelled, psycopg sends a cancel request and waits up to
        5 s for it, then 5 s more for the query to end (through a hung server: 10 s per attempt);
        so the connection is closed first, leaving its cancellation nothing to cancel."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._settings.request_timeout)
        except BaseException:  # we are cancelled ourselves (a stop): the query must not outlive us
            await _abandon(conn, task)
            raise
        if not done:
            await _abandon(conn, task)
            raise TimeoutError(f"no answer within {self._settings.request_timeout:g}s")
        task.result()

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


async def _abandon(conn: psycopg.AsyncConnection[Any], task: asyncio.Future[Any]) -> None:
    """Close `conn` under the query `task` runs, then cancel it: nothing is left to cancel."""
    await conn.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _utc(value: Any) -> Any:
    # QuestDB sends TIMESTAMP as `timestamp without time zone` holding UTC: attach UTC here.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # same as /exec: NaN and ±Inf read as NULL
    return value


_PG_TYPES = {
    1114: "TIMESTAMP",
    1184: "TIMESTAMP",
    701: "DOUBLE",
    700: "FLOAT",
    20: "LONG",
    23: "INT",
    21: "SHORT",
    16: "BOOLEAN",
    1043: "VARCHAR",
    25: "VARCHAR",
    2950: "UUID",
}


def _pg_type(oid: int) -> str:
    return _PG_TYPES.get(oid, "VARCHAR")


def make_reader(settings: QuestdbSettings, *, keep_text: bool = False) -> QuestdbReader:
    """The transport `settings.transport` names; `keep_text`: HTTP pages carry QuestDB's texts too."""
    if settings.transport == "pg":
        return PgWireReader(settings)
    return HttpReader(settings, keep_text=keep_text)
