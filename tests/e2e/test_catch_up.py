"""A first LowDB load through the real daemon: while its one transaction waits, /status, /metrics and
`syncd status` say how far it has got; once it commits, 100 %, its summary in /status and
`syncd status --loads`, and its table on stderr when that is a terminal (JSON lines otherwise)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from tests.e2e.daemon import SYNCD, DaemonProcess, write_config
from tests.integration.cli.conftest import syncd
from tests.lowdb_files import item, write_v7
from tests.questdb_server import QuestdbServer
from tests.questdb_upstream import Upstream

RECORDS = 2000


def gauge(metrics: str, name: str, stream: str = "workspace") -> float:
    """The value of `name{stream=...}` in a Prometheus exposition."""
    match = re.search(rf'^{name}{{stream="{stream}"}} (\S+)$', metrics, re.MULTILINE)
    assert match, f"{name} missing"
    return float(match.group(1))


async def test_first_load_progress_while_its_transaction_waits(dsn: str, tmp_path: Path) -> None:
    """syncd.checkpoints locked against writes (SHARE: reads pass) holds the load's transaction
    before its COPY (the checkpoint is written first): every record has been read, none staged,
    so it is half done and not caught up on every surface; then it commits."""
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item(f"item-{i}", title=f"t{i}") for i in range(RECORDS)], "categories": []})
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    config = write_config(tmp_path / "syncd.toml", body)
    blocker = await asyncpg.connect(dsn)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE syncd.checkpoints IN SHARE MODE")
    daemon = DaemonProcess(config, dsn).start()
    try:

        async def waiting() -> bool:
            status, document = await daemon.get("/status")
            stream = document.get("streams", {}).get("workspace", {}) if status == 200 else {}
            return bool(stream.get("catch_up", {}).get("read") == RECORDS)

        await daemon.until(waiting, 60, "every record read while the COPY waits")
        document: dict[str, Any] = (await daemon.get("/status"))[1]
        stream = document["streams"]["workspace"]
        assert stream["caught_up"] is False
        progress = stream["catch_up"]
        counts = (progress["read"], progress["total"], progress["staged"], progress["applied"])
        assert counts == (RECORDS, RECORDS, 0, 0)
        assert progress["percent"] == 50.0
        assert progress["eta_seconds"] > 0
        metrics = (await daemon.get("/metrics"))[1]
        assert gauge(metrics, "syncd_snapshot_progress_ratio") == 0.5
        assert gauge(metrics, "syncd_snapshot_rows_read") == gauge(metrics, "syncd_snapshot_rows_expected") == RECORDS
        assert gauge(metrics, "syncd_snapshot_rows_staged") == 0
        table = await asyncio.to_thread(syncd, "status", "--config", config, env={"SYNCD_HTTP_LISTEN": daemon.url[7:]})
        assert table.rc == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("workspace"))
        assert re.search(r"\b50% \d+s\b", row), table.stdout

        await lock.rollback()
        await daemon.leading()
        done = (await daemon.get("/status"))[1]["streams"]["workspace"]["catch_up"]
        assert done == {"read": RECORDS, "staged": RECORDS, "applied": RECORDS, "total": RECORDS,
                        "percent": 100.0, "eta_seconds": 0.0}  # fmt: skip
        metrics = (await daemon.get("/metrics"))[1]
        assert gauge(metrics, "syncd_snapshot_progress_ratio") == 1.0
        assert gauge(metrics, "syncd_snapshot_eta_seconds") == 0.0
        summary = (await daemon.get("/status"))[1]["streams"]["workspace"]["initial_load"]
        assert (summary["rows"], summary["tables"]["workspace.workspace_items"]["inserted"]) == (RECORDS, RECORDS)
        [logged] = [e["summary"] for e in daemon.events() if e["event"] == "initial load done"]  # JSON lines only
        assert logged == summary

        loads = await asyncio.to_thread(
            syncd, "status", "--loads", "--config", config, env={"SYNCD_HTTP_LISTEN": daemon.url[7:]}
        )
        assert loads.rc == 0, loads.stderr
        lines = [line.rstrip() for line in loads.stdout.splitlines()]
        assert "initial loads: 1 done" in lines
        rows = [line.split() for line in lines if line.lstrip().startswith("workspace")]
        assert rows[-3][:6] == ["workspace", str(RECORDS), str(RECORDS), "0", "0", "0"]  # the load's row
        assert rows[-1] == ["workspace_items", str(RECORDS), "0", "0"]  # and the table it wrote
        assert max(map(len, lines)) <= 80
    finally:
        await blocker.close()
        assert daemon.stop() == 0, daemon.output()


def on_terminal(fd: int, proc: subprocess.Popen[bytes], until: str, timeout: float) -> str:
    """Everything the process shows on the terminal `fd`, read as it comes (a full terminal would
    block it): once `until` has appeared it is sent SIGTERM, and read on to its exit."""
    seen, deadline, stopping = b"", time.monotonic() + timeout, False
    while True:
        if not stopping and until.encode() in seen:
            proc.send_signal(signal.SIGTERM)
            stopping = True
        left = deadline - time.monotonic()
        assert left > 0, f"{until!r} not shown, or no exit, in {timeout}s:\n{seen.decode(errors='replace')}"
        if select.select([fd], [], [], min(left, 1.0))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the process exited, the terminal is gone
                return seen.decode(errors="replace")
            if not chunk:
                return seen.decode(errors="replace")
            seen += chunk


async def test_initial_load_table_on_a_terminal(dsn: str, tmp_path: Path) -> None:
    """`syncd run` with stderr on a terminal: the JSON line, then the load's table for the person there."""
    path = tmp_path / "library.json"
    write_v7(path, {"items": [item(f"item-{i}") for i in range(50)], "categories": []})
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    config = write_config(tmp_path / "syncd.toml", body)
    terminal, stderr = pty.openpty()
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = DaemonProcess(config, dsn).env
    proc = subprocess.Popen([str(SYNCD), "run", "--config", str(config)], env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr)  # fmt: skip
    os.close(stderr)
    try:
        shown = await asyncio.to_thread(on_terminal, terminal, proc, "syncd: initial load of workspace: ", 90)
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(30)
        os.close(terminal)
    assert code == 0, shown[-4000:]
    assert re.search(r'"event": ?"initial load done"', shown), shown[-4000:]
    table = shown[shown.index("syncd: initial load of workspace: 50 row(s) read in "):].splitlines()
    load = next(line.split() for line in table if line.lstrip().startswith("workspace "))
    assert load[:6] == ["workspace", "50", "50", "0", "0", "0"]
    assert next(line.split() for line in table if "workspace_items" in line) == ["workspace_items", "50", "0", "0"]


async def test_questdb_catch_up_counts_its_backlog_in_the_daemon(
    questdb: Upstream, questdb_server: QuestdbServer, dsn: str, tmp_path: Path
) -> None:
    """A backlog of 3,000 signals read by pages of 250: the daemon's count gave the total (read of it
    all, 100 %), the summary names them, and `syncd status --loads` prints its row."""
    rows = 3_000
    await questdb.generate(rows, datetime.now(UTC) - timedelta(days=1), 1_000_000)
    config = write_config(tmp_path / "syncd.toml", f"""
[questdb]
http_port = {questdb_server.http_port}
pg_port = {questdb_server.pg_port}
tables = ["tp_capital_signals"]
page_size = 250
safety_lag = "1s"
""")
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading(timeout=60)
        stream = (await daemon.get("/status"))[1]["streams"]["questdb:tp_capital_signals"]
        assert stream["catch_up"] == {"read": rows, "staged": None, "applied": rows, "total": rows,
                                      "percent": 100.0, "eta_seconds": 0.0}  # fmt: skip
        assert stream["initial_load"]["tables"]["signals.tp_capital_signals"]["inserted"] == rows
        # Caught up on a quiet table: its rows' age (a day) is no lag; a poll under way may show its own time.
        assert stream["event_lag_seconds"] < 3600
        loads = await asyncio.to_thread(
            syncd, "status", "--loads", "--config", config, env={"SYNCD_HTTP_LISTEN": daemon.url[7:]}
        )
        assert loads.rc == 0, loads.stderr
        *_, load = (line.split() for line in loads.stdout.splitlines() if line.startswith(" questdb:"))
        assert load[:6] == ["questdb:tp_capital_signals", str(rows), str(rows), "0", "0", "0"]
    finally:
        assert daemon.stop() == 0, daemon.output()[-4000:]
