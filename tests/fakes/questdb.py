"""A QuestDB emulator for tests and the bench: `/exec` and `/ping` as questdb-api.md documents them.

Answers follow QuestDB, not syncd: exact key order, TIMESTAMP as 6-digit µs `Z` strings, NaN/±Inf
doubles as null, `count` always present, `limit=A,B` 1-based inclusive, `nm`, basic auth, 400
errors with `position`, DDL/DML acknowledgements. Fault knobs: `fail_next` (HTTP 500), `delay`
(slow answers for client timeouts), `stop()`/`start()` (down: connection refused on the same
port), `store.shuffle_ties`, `store.clock_offset_us`, `on_query` (runs a hook, e.g. a table
rebuild, before a matching query is answered). Run standalone: `python -m tests.fakes.questdb`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.questdb_engine import Answer, Store
from tests.fakes.questdb_sql import SqlError, iso

SIGNAL_DDL_COLUMNS = (
    ("ts", "TIMESTAMP"), ("channel", "SYMBOL"), ("signal_type", "SYMBOL"), ("asset", "SYMBOL"),
    ("buy_min", "DOUBLE"), ("buy_max", "DOUBLE"), ("target_1", "DOUBLE"), ("target_2", "DOUBLE"),
    ("target_final", "DOUBLE"), ("stop", "DOUBLE"), ("raw_message", "STRING"), ("source", "SYMBOL"),
    ("ingested_at", "TIMESTAMP"),
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
JSON = "application/json; charset=utf-8"
QueryHook = Callable[[str], Awaitable[None] | None]


def _encode(value: Any, column_type: str, quote_large: bool) -> Any:
    if value is None:
        return None
    if column_type in ("TIMESTAMP", "DATE"):
        return iso(value) if column_type == "TIMESTAMP" else iso(value)[:23] + "Z"
    if column_type in ("DOUBLE", "FLOAT"):
        return None if math.isnan(value) or math.isinf(value) else value
    if column_type == "LONG" and quote_large:
        return str(value)
    return value


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


def _limit(text: str | None) -> tuple[int, int | None]:
    """/exec `limit`: `N` → rows 1..N, `A,B` → rows A..B (1-based, inclusive); negatives clamp to 0."""
    if not text:
        return 0, None
    try:
        parts = [max(0, int(p)) for p in text.split(",")]
    except ValueError:
        return 0, None
    if len(parts) == 1:
        return 0, parts[0]
    return max(parts[0] - 1, 0), parts[1]


class QuestDBEmulator:
    """An aiohttp server over a `Store`; bind port 0, then `url`."""

    def __init__(self, *, user: str | None = "admin", password: str = "quest") -> None:
        self.store = Store()
        self.auth = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.queries: list[str] = []
        self.fail_next = 0
        self.delay = 0.0
        self.on_query: tuple[str, QueryHook] | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/exec", self.exec)
        app.router.add_get("/ping", self.ping)
        return app

    async def start(self) -> None:
        """Listen (again) on `port` (0 the first time: any free port)."""
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop listening: clients get connection refused, as with QuestDB down."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def run_sql(self, sql: str) -> Answer:
        """Run a statement directly (test set-up, upstream writers)."""
        return self.store.execute(sql)

    async def ping(self, _: web.Request) -> web.Response:
        """`/ping`: 204, no auth, as QuestDB's LineHttpPingProcessor."""
        return web.Response(status=204, headers={"X-Influxdb-Version": "v2.7.4"})

    async def exec(self, request: web.Request) -> web.StreamResponse:
        """`/exec?query=…`."""
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return web.Response(status=401, text="Unauthorized\r\n", headers={"WWW-Authenticate": "Basic"})
        sql = request.query.get("query", "")
        self.queries.append(sql)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.on_query is not None and self.on_query[0] in sql:
            _, hook = self.on_query
            self.on_query = None
            result = hook(sql)
            if result is not None:
                await result
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._json({"query": sql, "error": "internal error: emulated fault", "position": 0}, 500)
        if not sql.strip():
            return self._json({"error": "empty query", "query": "", "position": "0"}, 200)
        try:
            answer = self.store.execute(sql, need_total=_flag(request, "count"))
        except SqlError as exc:
            return self._json({"query": sql, "error": exc.message, "position": exc.position}, 400)
        return self._answer(request, sql, answer)

    def _answer(self, request: web.Request, sql: str, answer: Answer) -> web.Response:
        if answer.kind == "ddl":
            return self._json({"ddl": "OK"}, 200)
        if answer.kind == "dml":
            return self._json({"dml": "OK"}, 200)
        skip, stop = _limit(request.query.get("limit"))
        rows = answer.rows[skip:stop]
        quote = _flag(request, "quoteLargeNum") or request.query.get("src") == "con"
        types = answer.types
        dataset = [[_encode(v, types[i], quote) for i, v in enumerate(row)] for row in rows]
        count = len(answer.rows) if _flag(request, "count") else skip + len(rows)
        if _flag(request, "nm"):
            return self._json({"dataset": dataset, "count": count}, 200)
        columns = [{"name": n, "type": t} for n, t in zip(answer.names, types, strict=True)]
        return self._json({"query": sql, "columns": columns, "timestamp": answer.timestamp,
                           "dataset": dataset, "count": count}, 200)

    @staticmethod
    def _json(document: dict[str, Any], status: int) -> web.Response:
        # orjson keeps insertion order and writes compact JSON, as QuestDB does.
        return web.Response(body=orjson.dumps(document), status=status, content_type="application/json",
                            charset="utf-8", headers={"Server": "questDB/1.0"})


async def _serve(args: argparse.Namespace) -> None:
    emulator = QuestDBEmulator()
    for ddl in UPSTREAM_DDL:
        emulator.run_sql(ddl)
    if args.generated:
        now = emulator.store.now()
        start = now - int(args.generated / args.rate * 1e6) - 1 if not args.live else now
        emulator.store.tables.pop("tp_capital_signals")
        emulator.store.add_generated("tp_capital_signals", start, args.rate, args.generated, args.tick_us)
    emulator.port = args.port
    await emulator.start()
    print(f"PORT {emulator.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.questdb")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--generated", type=int, default=0, help="rows of a generated signals table")
    parser.add_argument("--rate", type=float, default=3.0, help="generated rows per second of ts")
    parser.add_argument("--tick-us", type=int, default=1_000_000, help="ts granularity")
    parser.add_argument("--live", action="store_true", help="rows appear in real time from now")
    try:
        asyncio.run(_serve(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)
