"""The supervisor and truthful status, seen from outside the real daemon process.

Two LowDB files, so one stream's trouble can be shown not to touch the other: `workspace`
(the workspace layout) and `notes` (a generic collection).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncd.cluster import free_port
from tests.e2e.daemon import DaemonProcess, write_config
from tests.lowdb_files import item, write_v7

pytestmark = pytest.mark.e2e


def two_files(tmp_path: Path, workspace_dir: Path | None = None) -> tuple[Path, Path, Path]:
    """Config with `workspace` (in `workspace_dir`, default tmp_path) and `notes`; (config, ws, notes)."""
    workspace = (workspace_dir or tmp_path) / "workspace.json"
    notes = tmp_path / "notes.json"
    body = (
        f'\n[[lowdb]]\nname = "workspace"\npath = "{workspace}"\nlayout = "workspace"\n'
        f'\n[[lowdb]]\nname = "notes"\npath = "{notes}"\nlayout = "generic"\ncollections = [{{name = "notes"}}]\n'
    )
    return write_config(tmp_path / "syncd.toml", body), workspace, notes


def write_notes(path: Path, *ids: str) -> None:
    """The notes file holding one record per id."""
    write_v7(path, {"notes": [{"id": i, "text": f"note {i}"} for i in ids]})


async def stream(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    """One stream's /status entry ({} while it is not listed)."""
    status, body = await daemon.get("/status")
    return body.get("streams", {}).get(name, {}) if status == 200 else {}


async def metric(daemon: DaemonProcess, name: str, stream_name: str) -> float | None:
    """A per-stream sample of /metrics, None when absent."""
    _, text = await daemon.get("/metrics")
    found = re.search(rf'^{name}\{{stream="{re.escape(stream_name)}"\}} (\S+)$', str(text), re.MULTILINE)
    return float(found.group(1)) if found else None


async def count(dsn: str, query: str) -> int:
    """A count(*) query's answer."""
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(query)
        return n
    finally:
        await conn.close()


async def test_a_failing_stream_restarts_with_backoff_while_the_other_flows(dsn: str, tmp_path: Path) -> None:
    """workspace's table renamed away: that stream fails (source_up 0, last_error, one line per failure)
    and is restarted with backoff; notes keeps flowing; renamed back, workspace recovers by itself."""
    config, workspace, notes = two_files(tmp_path)
    write_v7(workspace, {"items": [item("a1")], "categories": []})
    write_notes(notes, "n1")
    conn = await asyncpg.connect(dsn)
    await conn.execute("ALTER TABLE workspace.workspace_items RENAME TO workspace_items_away")
    daemon = DaemonProcess(config, dsn).start()
    try:

        async def failed_twice() -> bool:
            ws = await stream(daemon, "workspace")
            return ws.get("restarts", 0) >= 2 and ws.get("source_up") is False

        await daemon.until(failed_twice, 30, "workspace failed and restarted twice")
        ws = await stream(daemon, "workspace")
        assert "workspace_items" in ws["last_error"]
        assert ws["caught_up"] is False
        assert await metric(daemon, "syncd_source_up", "workspace") == 0
        assert (await metric(daemon, "syncd_stream_restarts_total", "workspace") or 0) >= 2
        status, ready = await daemon.get("/readyz")
        assert status == 503
        assert ready["streams_behind"] == ["workspace"]

        write_notes(notes, "n1", "n2")  # the other stream is untouched by workspace's failures

        async def notes_applied() -> bool:
            return await count(dsn, "SELECT count(*) FROM syncd.documents WHERE collection = 'notes'") == 2

        await daemon.until(notes_applied, 10, "notes applied while workspace fails")

        await conn.execute("ALTER TABLE workspace.workspace_items_away RENAME TO workspace_items")

        async def workspace_applied() -> bool:
            return await count(dsn, "SELECT count(*) FROM workspace.workspace_items WHERE id = 'a1'") == 1

        await daemon.until(workspace_applied, 40, "workspace recovered on its own")
        await daemon.ready(10)
        assert (await stream(daemon, "workspace"))["last_error"] is None
    finally:
        await conn.close()
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
    events = daemon.events()
    failures = [e for e in events if e["event"] == "stream failed; restarting from its checkpoint"]
    assert failures
    assert all(e["stream"] == "workspace" for e in failures)
    delays = [e["delay"] for e in failures]
    assert delays[-1] > delays[0], f"backoff did not grow: {delays}"
    assert any(e["event"] == "stream recovered" and e.get("stream") == "workspace" for e in events)


async def test_a_stalled_stream_is_failed_by_the_watchdog_and_readyz_says_so(dsn: str, tmp_path: Path) -> None:
    """A lock held on the table keeps a change from committing: past stall_timeout the stream is
    failed as stalled, /readyz is 503 naming it; once the lock goes, the change lands."""
    config, workspace, notes = two_files(tmp_path)
    write_v7(workspace, {"items": [item("a1")], "categories": []})
    write_notes(notes, "n1")
    daemon = DaemonProcess(config, dsn, env={"SYNCD_DAEMON_STALL_TIMEOUT": "2s"}).start()
    blocker = await asyncpg.connect(dsn)
    try:
        await daemon.leading()
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE workspace.workspace_items IN ACCESS EXCLUSIVE MODE")
        write_v7(workspace, {"items": [item("a1"), item("a2")], "categories": []})

        async def stalled() -> bool:
            ws = await stream(daemon, "workspace")
            status, ready = await daemon.get("/readyz")
            return "stalled" in str(ws.get("last_error")) and status == 503 and "workspace" in ready["streams_behind"]

        await daemon.until(stalled, 15, "the watchdog to fail the stalled stream")
        assert (await stream(daemon, "notes"))["caught_up"] is True
        await lock.rollback()

        async def a2_applied() -> bool:
            return await count(dsn, "SELECT count(*) FROM workspace.workspace_items WHERE id = 'a2'") == 1

        await daemon.until(a2_applied, 10, "the change once the lock is gone")
        await daemon.ready(10)
        assert (await metric(daemon, "syncd_stream_restarts_total", "workspace") or 0) >= 1
    finally:
        await blocker.close()
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]


async def test_missing_directory_waits_and_an_untouched_file_has_no_lag(dsn: str, tmp_path: Path) -> None:
    """workspace's directory does not exist: that stream waits, source down with the reason, while
    notes (a file untouched for two hours) is caught up with event lag 0, not its age. The
    directory appears with a file: workspace flows."""
    config, workspace, notes = two_files(tmp_path, tmp_path / "not-mounted-yet")
    write_notes(notes, "n1")
    two_hours_ago = time.time() - 7200
    os.utime(notes, (two_hours_ago, two_hours_ago))
    daemon = DaemonProcess(config, dsn).start()
    try:

        async def notes_caught_up() -> bool:
            return (await stream(daemon, "notes")).get("caught_up") is True

        await daemon.until(notes_caught_up, 30, "notes caught up")
        assert (await stream(daemon, "notes"))["event_lag_seconds"] == 0
        assert await metric(daemon, "syncd_event_lag_seconds", "notes") == 0
        ws = await stream(daemon, "workspace")
        assert ws["source_up"] is False
        assert ws["caught_up"] is False
        assert ws["last_error"] == f"directory {workspace.parent} does not exist"
        assert (await daemon.get("/readyz"))[0] == 503

        workspace.parent.mkdir()

        async def says_file_missing() -> bool:
            return "does not exist (lowdb creates it" in str((await stream(daemon, "workspace")).get("last_error"))

        await daemon.until(says_file_missing, 10, "workspace to report its missing file")
        assert (await stream(daemon, "workspace"))["caught_up"] is False
        write_v7(workspace, {"items": [item("a1")], "categories": []})
        await daemon.ready(10)
        ws = await stream(daemon, "workspace")
        assert ws["source_up"] is True
        assert ws["last_error"] is None
        assert ws["event_lag_seconds"] < 60
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
    lines = [e for e in daemon.events() if e["event"] == "lowdb source down"]
    assert len(lines) == 2, f"one line per state change, got {lines}"


async def test_questdb_down_is_not_caught_up(dsn: str, tmp_path: Path) -> None:
    """QuestDB unreachable: its stream is not caught up, says why, and the daemon is not ready."""
    config = write_config(
        tmp_path / "syncd.toml",
        f'\n[questdb]\nhost = "127.0.0.1"\nhttp_port = {free_port()}\ntables = ["telegram_bots"]\n',
    )
    daemon = DaemonProcess(config, dsn).start()
    try:

        async def reports_down() -> bool:
            bots = await stream(daemon, "questdb:telegram_bots")
            status, ready = await daemon.get("/readyz")
            return (
                bots.get("source_up") is False
                and bool(bots.get("last_error"))
                and status == 503
                and ready["leader"] is True
                and ready["streams_behind"] == ["questdb:telegram_bots"]
            )

        await daemon.until(reports_down, 30, "the QuestDB stream down, the leader not ready because of it")
        assert (await stream(daemon, "questdb:telegram_bots"))["caught_up"] is False
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
