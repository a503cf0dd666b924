"""A stream's first catch-up through the real LowDB source, runner and sink: its progress in
/status and metrics, and its summary as one JSON log line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import structlog

from syncd import metrics
from syncd import stream as stream_module
from syncd.config import LowdbSettings
from syncd.logs import configure
from syncd.lowdb.source import LowdbSource
from syncd.sink.postgres import PostgresSink
from syncd.stream import StreamRunner
from tests.integration.conftest import eventually, running
from tests.lowdb_files import item, write_v7

RECORDS = 3000


@pytest.fixture
def json_logs(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging put back after the test configures the daemon's; stream.py's logger a fresh proxy
    (it may be cached on an earlier configuration)."""
    monkeypatch.setattr(stream_module, "log", structlog.get_logger(stream_module.__name__))


def gauge(metric: Any, stream: str = "workspace") -> float:
    """Current value of a per-stream gauge."""
    value: float = metric.labels(stream)._value.get()
    return value


def summaries(err: str) -> list[dict[str, Any]]:
    """The `initial load done` events among stderr's JSON lines."""
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [e["summary"] for e in events if e["event"] == "initial load done"]


async def caught_up(runner: StreamRunner) -> bool:
    """The runner has applied the initial snapshot."""
    return runner.state.caught_up


async def test_catch_up_progress_and_summary_of_a_file_of_thousands(
    pool: asyncpg.Pool, sink: PostgresSink, tmp_path: Path, capsys: pytest.CaptureFixture[str], json_logs: None
) -> None:
    """Before: nothing read, no total. After: every record read and applied, 100 %, the gauges and one
    summary line; a restart that finds 10 edited and 5 new records counts only those as applied."""
    configure("info")  # here, not in a fixture: stderr is the captured one only once the test runs
    path = tmp_path / "library.json"
    records = [item(f"item-{i}", title=f"t{i}") for i in range(RECORDS)]
    write_v7(path, {"items": records, "categories": []})
    settings = LowdbSettings(name="workspace", path=path, layout="workspace")
    runner = StreamRunner(LowdbSource(settings, pool=pool), sink)
    before = runner.state.as_json()["catch_up"]
    assert before == {"read": 0, "staged": 0, "applied": 0, "total": None, "percent": None, "eta_seconds": None}

    async with running(LowdbSource(settings, pool=pool), sink) as runner:
        await eventually(lambda: caught_up(runner), what="caught up")
        after = runner.state.as_json()["catch_up"]
    assert after == {
        "read": RECORDS, "staged": RECORDS, "applied": RECORDS, "total": RECORDS, "percent": 100.0, "eta_seconds": 0.0}
    assert gauge(metrics.SNAPSHOT_ROWS_READ) == gauge(metrics.SNAPSHOT_ROWS_EXPECTED) == RECORDS
    assert gauge(metrics.SNAPSHOT_ROWS_APPLIED) == RECORDS
    [first] = summaries(capsys.readouterr().err)
    assert first["table"] == "workspace"
    assert (first["rows"], first["total"], first["quarantined"]) == (RECORDS, RECORDS, 0)
    items = first["tables"]["workspace.workspace_items"]
    assert (items["inserted"], items["updated"], items["deleted"]) == (RECORDS, 0, 0)
    assert first["seconds"] >= first["sink_seconds"] > 0

    for i in range(10):
        records[i] = {**records[i], "title": "edited"}
    records += [item(f"new-{i}") for i in range(5)]
    write_v7(path, {"items": records, "categories": []})
    async with running(LowdbSource(settings, pool=pool), sink) as runner:
        await eventually(lambda: caught_up(runner), what="caught up again")
        again = runner.state.as_json()["catch_up"]
    assert (again["read"], again["staged"], again["applied"], again["total"]) == (RECORDS + 5, 15, 15, RECORDS + 5)
    [second] = summaries(capsys.readouterr().err)
    items = second["tables"]["workspace.workspace_items"]
    assert (second["rows"], items["inserted"], items["updated"], items["deleted"]) == (RECORDS + 5, 5, 10, 0)
