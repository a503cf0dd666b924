"""Reading QuestDB: one small interface, two transports (HTTP `/exec` and PG wire).

Both transports return the same `Result`: column names and QuestDB types, rows as tuples with
timestamps as aware UTC datetimes, NULL/NaN/±Inf doubles as None. Failures are typed: a missing
table (QuestDB's rebuild window) is `TableMissing`, anything transient `SourceUnavailable`, a
refused query `QueryRejected`. Error text is classified, never SQLSTATE: QuestDB's PG wire sends
`00000` for every error.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson
import psycopg

from syncd.config import QuestdbSettings
from syncd.errors import QueryRejected, SourceUnavailable, TableMissing

SOURCE = "questdb"
_MISSING = re.compile(r"table does not exist \[table=([^\]]+)\]")
_TS_TYPES = frozenset({"TIMESTAMP", "DATE", "TIMESTAMP_NS"})


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
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout)
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
        except orjson.JSONDecodeError as exc:
            raise SourceUnavailable(SOURCE, f"HTTP {status}, body is not JSON") from exc
        if status >= 500 or not isinstance(document, dict):
            detail = document.get("error", "") if isinstance(document, dict) else "not a JSON object"
            raise SourceUnavailable(SOURCE, f"HTTP {status}: {detail}", defer=0.5)
        if "error" in document:
            position = document.get("position", document.get("errorPos"))
            raise classify_error(sql, str(document["error"]), _int_or_none(position))
        names, types, dataset = _shape(document, status)
        stamps = _decoders(types)
        rows = Rows()
        for raw in dataset:
            row = raw.copy() if self._keep_text else raw
            for i in stamps:
                row[i] = parse_timestamp(row[i])
            rows.append(tuple(row))
        if self._keep_text:
            rows.texts = dataset
        return Result(names, types, rows)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _shape(document: Any, status: int) -> tuple[tuple[str, ...], tuple[str, ...], list[list[Any]]]:
    """Names, types and rows of a SELECT answer; a body of another shape (a proxy's, a bug's) is
    a transient failure, never rows."""
    try:
        columns, dataset = document["columns"], document["dataset"]
        names = tuple(str(c["name"]) for c in columns)
        types = tuple(str(c["type"]) for c in columns)
        if not isinstance(dataset, list) or any(not isinstance(r, list) or len(r) != len(names) for r in dataset):
            raise TypeError("rows do not match the columns")
    except (KeyError, TypeError) as exc:
        raise SourceUnavailable(SOURCE, f"HTTP {status}, unexpected JSON shape: {exc}", defer=0.5) from exc
    return names, types, dataset


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
            kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, int(s.request_timeout))}
            if self._dsn is None:
                kwargs.update(
                    host=s.host, port=s.pg_port, user=s.user, password=s.password.get_secret_value(), dbname="qdb"
                )
            self._conn = await psycopg.AsyncConnection.connect(self._dsn or "", **kwargs)
        return self._conn

    async def query(self, sql: str) -> Result:
        """Run `sql` over PG wire; errors classified by text (QuestDB's SQLSTATE is always 00000)."""
        try:
            conn = await self._connect()
            async with conn.cursor(binary=True) as cur:
                await asyncio.wait_for(cur.execute(sql.encode()), self._settings.request_timeout)
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

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


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
