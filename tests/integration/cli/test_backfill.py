"""`syncd backfill questdb` against the real QuestDB: a summary table per PostgreSQL table, then the JSON line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson

from tests.integration.cli.conftest import syncd
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import Upstream


async def test_backfill_ends_with_a_summary_table_and_a_json_line(
    questdb: Upstream, questdb_server: QuestdbServer, dsn: str
) -> None:
    rows = 1_200
    await questdb.generate(rows, datetime.now(UTC) - timedelta(days=2), 60_000_000)
    env = {"SYNCD_PG_DSN": dsn, "QUESTDB_HTTP_PORT": str(questdb_server.http_port)}
    args = ("backfill", "questdb", "--table", "tp_capital_signals", "--page-size", "500", "--no-progress")
    first = await asyncio.to_thread(syncd, *args, env=env)
    assert first.rc == 0, first.stderr
    *table, last = first.stdout.strip().splitlines()
    summary = orjson.loads(last)
    assert summary["rows"] == rows
    assert summary["tables"]["signals.tp_capital_signals"] == {"inserted": rows, "updated": 0, "deleted": 0,
                                                               "unchanged": 0}
    assert summary["quarantined"] == 0
    assert table[0].startswith(f"syncd backfill tp_capital_signals: {rows} row(s) read in ")
    load, written = (t.split() for t in table if t.lstrip().startswith("tp_capital_signals"))
    assert load[:6] == ["tp_capital_signals", str(rows), str(rows), "0", "0", "0"]  # read, ins, upd, del, held
    assert written == ["tp_capital_signals", str(rows), "0", "0"]  # the PostgreSQL table it wrote
    assert max(len(t) for t in table) <= 80
