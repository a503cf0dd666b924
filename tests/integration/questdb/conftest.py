"""Fixtures for the QuestDB source: settings pointing at the session's real server, on each transport.

`questdb` (tests/conftest.py) gives upstream's tables afresh and a writer that writes like upstream.
"""

from __future__ import annotations

import pytest

from syncd.config import QuestdbSettings
from tests.questdb_server import QuestdbServer


@pytest.fixture(params=["http", "pg"])
def settings(request: pytest.FixtureRequest, questdb_server: QuestdbServer) -> QuestdbSettings:
    """Fast polling; small pages so page boundaries are exercised; each test on both transports.

    safety_lag 0.5 s is well above the WAL apply delay measured on this server (bench), so a row
    committed before `now() - safety_lag` is visible to the poll that covers its `ts`.
    """
    return QuestdbSettings(http_port=questdb_server.http_port, pg_port=questdb_server.pg_port,
                           transport=request.param, poll_interval=0.05, safety_lag=0.5, lag_window=3600,
                           rescan_interval=0.2, page_size=5, request_timeout=1.0,
                           connect_timeout=1.0)
