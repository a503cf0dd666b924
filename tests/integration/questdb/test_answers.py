"""QuestDB answers validated where they are read: every bad answer is "source down" with its reason.

The real server behind `FaultyHttp` (tests/questdb_faults.py), which answers a few requests with a
fault the real server cannot be made to produce: the stream never ends, says why it is down, and
every row written meanwhile arrives once the answers are good again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from syncd import metrics
from syncd.config import QuestdbSettings
from syncd.questdb.source import SignalsSource, VersionedSource
from syncd.sink.postgres import PostgresSink
from syncd.stream import StreamRunner
from tests.integration.conftest import eventually
from tests.integration.questdb.test_source import NOW, in_sync, sample
from tests.questdb_faults import Fault, FaultyHttp
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import Signal, Upstream

REASONS: dict[Fault, str] = {
    "500": "HTTP 500: internal error",
    "html": "HTTP 502, body is not JSON: '<html><body><h1>502 Bad Gateway",
    "shape": "not a QuestDB answer: columns: Field required",
    "array": "not a QuestDB answer: body: Input should be a valid dictionary",
    "empty": "answer has no row 0, column 0 (0 rows)",
    "cell": "column now (TIMESTAMP) holds int",
    "refused": "Invalid column: ingested_at",
    "hang": "TimeoutError",
}


@pytest.fixture
async def front(questdb_server: QuestdbServer) -> AsyncIterator[FaultyHttp]:
    """The faulty HTTP front of the session's real server."""
    server = FaultyHttp(questdb_server.http_port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("fault", list(REASONS))
async def test_a_bad_answer_is_source_down_with_its_reason_and_the_stream_recovers(
    questdb: Upstream, front: FaultyHttp, sink: PostgresSink, pool: asyncpg.Pool,
    capfd: pytest.CaptureFixture[str], fault: Fault,
) -> None:
    """Down (source_up 0, the reason logged), never ended; then every row written meanwhile lands."""
    settings = QuestdbSettings(http_port=front.port, poll_interval=0.05, safety_lag=0.5, page_size=5,
                               request_timeout=0.5)
    source = SignalsSource(settings)
    runner = StreamRunner(source, sink)
    task = asyncio.create_task(runner.run())
    try:
        await questdb.insert(Signal(NOW - timedelta(minutes=9)))
        await eventually(lambda: in_sync(questdb, pool), what="first row")
        front.fail(2, fault)
        await questdb.insert(Signal(NOW - timedelta(minutes=8), asset=f"F{fault}"))
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 0), what="source down")
        await eventually(lambda: _true(not front.pending), timeout=15, what=f"{fault} answers served")
        await eventually(lambda: in_sync(questdb, pool), timeout=20, what=f"rows after {fault}")
        await eventually(lambda: _true(sample(metrics.SOURCE_UP, stream=source.stream) == 1), what="up again")
        assert not task.done()
    finally:
        await runner.stop(task, 5.0)
    logged = capfd.readouterr().out
    assert "questdb read failed, retrying" in logged
    assert REASONS[fault] in logged
    assert front.faults_served == 2


async def test_a_versioned_table_survives_bad_answers_too(
    questdb: Upstream, front: FaultyHttp, sink: PostgresSink, pool: asyncpg.Pool
) -> None:
    """The versioned poll reads the clock and a count/max pair: mistyped, they are source down."""
    settings = QuestdbSettings(http_port=front.port, poll_interval=0.05, rescan_interval=0.2, request_timeout=0.5)
    source = VersionedSource(settings, "telegram_bots")
    runner = StreamRunner(source, sink)
    task = asyncio.create_task(runner.run())
    try:
        await questdb.append_bot("bot-1", "active", NOW - timedelta(minutes=10), token="SECRET")
        await eventually(lambda: _bots(pool, 1), what="first version")
        for fault in ("empty", "cell", "array"):
            front.fail(1, fault)  # type: ignore[arg-type]
        await questdb.append_bot("bot-2", "active", NOW - timedelta(minutes=5), token="SECRET")
        await eventually(lambda: _true(not front.pending), what="faults served")
        await eventually(lambda: _bots(pool, 2), what="second bot after the faults")
        assert not task.done()
    finally:
        await runner.stop(task, 5.0)


async def _bots(pool: asyncpg.Pool, n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM signals.telegram_bots") == n)
