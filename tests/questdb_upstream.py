"""Upstream's QuestDB tables, written the way tp-capital writes them (upstream-data-shapes.md §2).

Every statement goes through `GET /exec?query=…`, one row per INSERT, `ts` as
`to_timestamp('<iso ms>', 'yyyy-MM-ddTHH:mm:ss.SSSZ')`, `ingested_at` as the server's `now()`.
A delete copies the row to `tp_capital_signals_deleted` (with `deleted_at = now()`), then rebuilds
the table: DROP the temp table, CREATE … AS (every other row), DROP the table, RENAME the temp.
"""

from __future__ import annotations

import asyncio
import math
import time
from base64 import b64encode
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

SIGNAL_COLUMNS = (
    "ts, channel, signal_type, asset, buy_min, buy_max, target_1, target_2, target_final, stop, "
    "raw_message, source, ingested_at"
)
UPSTREAM_DDL = (
    "CREATE TABLE IF NOT EXISTS tp_capital_signals (ts TIMESTAMP, channel SYMBOL, signal_type SYMBOL, "
    "asset SYMBOL, buy_min DOUBLE, buy_max DOUBLE, target_1 DOUBLE, target_2 DOUBLE, target_final DOUBLE, "
    "stop DOUBLE, raw_message STRING, source SYMBOL, ingested_at TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY",
    "CREATE TABLE IF NOT EXISTS tp_capital_signals_deleted (ts TIMESTAMP, channel SYMBOL, signal_type SYMBOL, "
    "asset SYMBOL, buy_min DOUBLE, buy_max DOUBLE, target_1 DOUBLE, target_2 DOUBLE, target_final DOUBLE, "
    "stop DOUBLE, raw_message STRING, source SYMBOL, ingested_at TIMESTAMP, deleted_at TIMESTAMP) "
    "TIMESTAMP(ts) PARTITION BY DAY",
    "CREATE TABLE IF NOT EXISTS telegram_bots (id SYMBOL, username SYMBOL, token STRING, bot_type SYMBOL, "
    "description STRING, status SYMBOL, created_at TIMESTAMP, updated_at TIMESTAMP) "
    "TIMESTAMP(updated_at) PARTITION BY DAY",
    "CREATE TABLE IF NOT EXISTS telegram_channels (id SYMBOL, label SYMBOL, channel_id LONG, "
    "channel_type SYMBOL, description STRING, status SYMBOL, signal_count LONG, last_signal TIMESTAMP, "
    "created_at TIMESTAMP, updated_at TIMESTAMP) TIMESTAMP(updated_at) PARTITION BY DAY",
)
TABLES = ("tp_capital_signals", "tp_capital_signals_deleted", "telegram_bots", "telegram_channels")
_TMP = "tp_capital_signals_tmp_delete"
_US = "yyyy-MM-ddTHH:mm:ss.SSSUUUZ"


class QuestdbError(Exception):
    """QuestDB refused a statement (its JSON `error`)."""


@dataclass(frozen=True, slots=True)
class Signal:
    """One tp-capital signal; None numbers are written as SQL null, as upstream's `orNull` does."""

    ts: datetime
    asset: str = "BEEFW655"
    channel: str = "@TPCapital_Oficial"
    signal_type: str = "Swing Trade"
    buy_min: float | None = 1.5
    buy_max: float | None = 2.0
    target_1: float | None = 2.5
    target_2: float | None = 3.0
    target_final: float | None = 4.0
    stop: float | None = 1.0
    raw_message: str = "COMPRA BEEFW655"
    source: str = "forwarder"

    def values(self, ingested_at: str) -> str:
        """The VALUES tuple; `ingested_at` is SQL (upstream: `now()`)."""
        numbers = [
            _number(v) for v in (self.buy_min, self.buy_max, self.target_1, self.target_2, self.target_final, self.stop)
        ]
        text = [_quote(v) for v in (self.channel, self.signal_type, self.asset)]
        return (
            f"({ts_ms(self.ts)}, {', '.join(text)}, {', '.join(numbers)}, {_quote(self.raw_message)}, "
            f"{_quote(self.source)}, {ingested_at})"
        )


def ts_ms(value: datetime) -> str:
    """Upstream's `ts` expression: the post date at millisecond precision."""
    iso = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"to_timestamp('{iso}', 'yyyy-MM-ddTHH:mm:ss.SSSZ')"


def iso_us(value: datetime) -> str:
    """QuestDB's µs timestamp text (what `/exec` returns and upstream's delete matches on)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _number(value: float | None) -> str:
    # Upstream's orNull writes NaN as null; NaN/Infinity literals stand for any other writer.
    if value is None:
        return "null"
    if math.isnan(value):
        return "NaN"
    return repr(value) if math.isfinite(value) else ("'Infinity'" if value > 0 else "'-Infinity'")


class Upstream:
    """An `/exec` client of one server, writing as tp-capital does."""

    def __init__(self, http_port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{http_port}/exec"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def exec(self, sql: str) -> dict[str, Any]:
        """Run one statement; QuestDB's error raises QuestdbError."""
        if self._session is None:
            # Upstream sends basic auth (admin/quest); the OSS server accepts and ignores it.
            self._session = aiohttp.ClientSession(
                headers={"Authorization": "Basic " + b64encode(b"admin:quest").decode()}
            )
        async with self._session.get(self.url, params={"query": sql}) as response:
            body: dict[str, Any] = await response.json(content_type=None)
        if "error" in body:
            raise QuestdbError(f"{body['error']} in {sql!r}")
        return body

    async def rows(self, sql: str) -> list[list[Any]]:
        """The dataset of a SELECT."""
        rows: list[list[Any]] = (await self.exec(sql))["dataset"]
        return rows

    async def reset(self) -> None:
        """Drop every upstream table (and a leftover temp table), then create them afresh."""
        for table in (*TABLES, _TMP):
            await self.exec(f"DROP TABLE IF EXISTS {table}")
        for ddl in UPSTREAM_DDL:
            await self.exec(ddl)

    async def insert(self, signal: Signal, *, ingested: bool = True) -> None:
        """tp-capital's `writeSignal`; `ingested=False` writes a row from before `ingested_at` existed."""
        values = signal.values("now()" if ingested else "null")
        await self.exec(f"INSERT INTO tp_capital_signals ({SIGNAL_COLUMNS}) VALUES {values};")

    async def update(self, ingested_at: str, column: str, value: str) -> None:
        """An UPDATE of one signal's text column in place (upstream never does; an operator can),
        waiting until it is applied: the row keeps its `ts` and `ingested_at`, its content changes."""
        await self.exec(
            f"UPDATE tp_capital_signals SET {column} = {_quote(value)} "
            f"WHERE ingested_at = to_timestamp('{ingested_at}', '{_US}')"
        )
        await self.applied()

    async def delete(self, ingested_at: str) -> None:
        """tp-capital's `deleteSignalByIngestedAt` (µs ISO text), step by step."""
        await self.copy_to_deleted(ingested_at)
        await self.rebuild_without(ingested_at)
        await self.exec(f"RENAME TABLE {_TMP} TO tp_capital_signals")

    async def copy_to_deleted(self, ingested_at: str) -> None:
        """Step 1 of a delete: the row into `_deleted` with `deleted_at = now()`."""
        await self.exec(
            f"INSERT INTO tp_capital_signals_deleted ({SIGNAL_COLUMNS}, deleted_at) SELECT {SIGNAL_COLUMNS}, now() "
            f"FROM tp_capital_signals WHERE ingested_at = to_timestamp('{ingested_at}', '{_US}')"
        )

    async def rebuild_without(self, ingested_at: str) -> None:
        """Steps 2-4: the temp table from every other row, then DROP the table (it is missing now)."""
        await self.exec(f"DROP TABLE IF EXISTS {_TMP}")
        await self.exec(
            f"CREATE TABLE {_TMP} AS (SELECT {SIGNAL_COLUMNS} FROM tp_capital_signals "
            f"WHERE ingested_at != to_timestamp('{ingested_at}', '{_US}')) TIMESTAMP(ts) PARTITION BY DAY"
        )
        await self.exec("DROP TABLE tp_capital_signals")

    async def finish_rebuild(self) -> None:
        """Step 5: RENAME the temp table back (the table exists again)."""
        await self.exec(f"RENAME TABLE {_TMP} TO tp_capital_signals")

    async def append_bot(self, id_: str, status: str, at: datetime, token: str = "SECRET") -> None:
        """A telegram_bots version (upstream appends; an UPDATE of the designated ts fails)."""
        stamp = _quote(iso_us(at))
        await self.exec(
            f"INSERT INTO telegram_bots VALUES ({_quote(id_)}, {_quote('user_' + id_)}, {_quote(token)}, "
            f"'sender', 'd', {_quote(status)}, {stamp}, {stamp})"
        )

    async def append_channel(self, id_: str, status: str, at: datetime, signals: int = 0) -> None:
        """A telegram_channels version."""
        stamp = _quote(iso_us(at))
        await self.exec(
            f"INSERT INTO telegram_channels VALUES ({_quote(id_)}, {_quote('label ' + id_)}, -100123, 'source', "
            f"'d', {_quote(status)}, {signals}, {stamp}, {stamp}, {stamp})"
        )

    async def generate(self, rows: int, start: datetime, step_us: int) -> None:
        """`rows` signals of upstream's shape generated inside QuestDB in one INSERT … SELECT (a
        history this size through one-row INSERTs would take minutes), `ts` every `step_us` from
        `start`, `ingested_at` one second after its `ts`; waits until they are applied."""
        first, ingested = iso_us(start), iso_us(start + timedelta(seconds=1))
        await self.exec(
            "INSERT INTO tp_capital_signals SELECT "
            f"timestamp_sequence(to_timestamp('{first}', '{_US}'), {step_us}) ts, "
            "rnd_symbol('@TPCapital_Oficial', 'TP CAPITAL | OPCOES') channel, rnd_symbol('Swing Trade', 'Day Trade'), "
            "rnd_symbol(200, 6, 8, 0) asset, rnd_double(2) * 10, rnd_double(2) * 10, rnd_double() * 10, "
            "rnd_double() * 10, rnd_double() * 10, rnd_double() * 10, rnd_str(20, 120, 1) raw_message, "
            "rnd_symbol('forwarder', 'ingestion') source, "
            f"timestamp_sequence(to_timestamp('{ingested}', '{_US}'), {step_us}) ingested_at "
            f"FROM long_sequence({rows})"
        )
        await self.applied(max(60.0, rows / 20_000))

    async def applied(self, timeout: float = 10.0) -> None:
        """Wait until every WAL transaction of every table is applied (writerTxn = sequencerTxn)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = await self.rows("SELECT name FROM wal_tables() WHERE writerTxn < sequencerTxn")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"WAL not applied after {timeout} s: {pending}")
            await asyncio.sleep(0.01)

    async def keys(self) -> list[str]:
        """`ingested_at` of every live signal (µs ISO), oldest first."""
        rows = await self.rows(
            "SELECT ingested_at FROM tp_capital_signals WHERE ingested_at IS NOT NULL ORDER BY ingested_at"
        )
        return [r[0] for r in rows]
