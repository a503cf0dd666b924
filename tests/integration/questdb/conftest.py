"""Fixtures for the QuestDB source: the emulator and settings pointing at it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from syncd.config import QuestdbSettings
from tests.fakes.questdb import UPSTREAM_DDL, QuestDBEmulator


@pytest.fixture
async def questdb() -> AsyncIterator[QuestDBEmulator]:
    """A running emulator with upstream's tables."""
    emulator = QuestDBEmulator()
    for ddl in UPSTREAM_DDL:
        emulator.run_sql(ddl)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
        assert_questdb_valid(emulator.queries)


def assert_questdb_valid(queries: list[str]) -> None:
    """Every query syncd sent is one QuestDB accepts and PostgreSQL accepts too (no OFFSET, LIMIT a,b)."""
    for sql in queries:
        assert not re.search(r"\bOFFSET\b", sql, re.I), sql
        assert not re.search(r"\bLIMIT\s+-?\d+\s*,", sql, re.I), sql
        assert "systimestamp" not in sql.lower(), sql
        assert "token" not in sql.lower(), sql


@pytest.fixture
def settings(questdb: QuestDBEmulator) -> QuestdbSettings:
    """Fast polling against the emulator; small pages so page boundaries are exercised."""
    return QuestdbSettings(http_port=questdb.port, poll_interval=0.05, safety_lag=0.0, lag_window=3600,
                           rescan_interval=0.2, page_size=5, request_timeout=1.0)
