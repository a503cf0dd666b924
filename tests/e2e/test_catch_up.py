"""A first LowDB load through the real daemon: while its one transaction waits, /status, /metrics and
`syncd status` say how far it has got; once it commits, 100 %."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg

from tests.e2e.daemon import DaemonProcess, write_config
from tests.integration.cli.conftest import syncd
from tests.lowdb_files import item, write_v7

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
    finally:
        await blocker.close()
        assert daemon.stop() == 0, daemon.output()
