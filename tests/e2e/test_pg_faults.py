"""PostgreSQL restarted and syncd's backends killed under a real lowdb@7 writer: syncd stays up.

Each test has a cluster of its own (it restarts it). A fault is `pg_ctl restart -m fast`,
`pg_ctl restart -m immediate` (a crash: recovery on start) or `pg_terminate_backend` of every
syncd session. After each fault the file version on disk at that moment must reach PostgreSQL
within RECOVERY_SECONDS, the process must never exit, and at the end PostgreSQL equals the file.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
import pytest

from syncd.cluster import LocalCluster, make_cluster
from syncd.database import connect
from syncd.migrate import migrate
from tests.e2e.daemon import DaemonProcess
from tests.e2e.test_daemon import lowdb_config, readyz
from tests.e2e.test_lowdb_writers import NODE, NODE_DIR, node_modules, pg_matches_file
from tests.lowdb_files import item, write_v7

__all__ = ["node_modules"]  # the module fixture installing the npm writers

pytestmark = [
    pytest.mark.e2e,
]

RECOVERY_SECONDS = 10.0
"""After a fault, the file's newest version must be in PostgreSQL within this (issue 13)."""
FAULTS = ("restart-fast", "restart-immediate", "terminate")
WRITE_INTERVAL_MS = 25


@pytest.fixture
async def cluster() -> AsyncIterator[LocalCluster]:
    """A migrated PostgreSQL of this test's own, destroyed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="syncd-faults-pg-"))
    root.chmod(0o755)
    made = make_cluster(root)
    assert isinstance(made, LocalCluster), "restarting PostgreSQL needs the system's binaries (pg_ctl)"
    try:
        conn = await connect(made.start())
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield made
    finally:
        made.destroy()


@contextmanager
def lowdb_writer(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real lowdb@7 writer editing `path` until the block ends (SIGTERM: it finishes its write)."""
    proc = subprocess.Popen([str(NODE), str(NODE_DIR / "writer-loop.mjs"), str(path), str(WRITE_INTERVAL_MS)],
                            cwd=NODE_DIR)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def file_clock(path: Path) -> int:
    """The writer's counter in the file as it is on disk now."""
    items = orjson.loads(path.read_bytes())["items"]
    return int(next(r["title"] for r in items if r["id"] == "clock"))


async def pg_clock(dsn: str) -> int | None:
    """The writer's counter as PostgreSQL holds it; None while PostgreSQL cannot answer."""
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        title = await conn.fetchval("SELECT title FROM workspace.workspace_items WHERE id = 'clock'")
        return None if title is None else int(title)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    finally:
        conn.terminate()


def caught_up_with(dsn: str, mark: int) -> Callable[[], Awaitable[bool]]:
    """A check: PostgreSQL holds the writer's version `mark` or a newer one."""

    async def check() -> bool:
        got = await pg_clock(dsn)
        return got is not None and got >= mark

    return check


async def inject(cluster: LocalCluster, fault: str) -> None:
    """One fault; returns once PostgreSQL accepts connections again."""
    if fault == "terminate":
        conn = await asyncpg.connect(cluster.dsn)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'syncd'"
            )
        finally:
            await conn.close()
        assert killed, "syncd had no session to terminate"
        return
    await asyncio.to_thread(cluster.restart, "fast" if fault == "restart-fast" else "immediate")


@dataclass
class Run:
    """What one fault run saw."""

    faults: dict[str, int] = field(default_factory=dict)
    recovery: list[float] = field(default_factory=list)
    restarts: int = 0
    lost: int = 0


async def stream_restarts(daemon: DaemonProcess) -> int:
    """syncd_stream_restarts_total summed over streams, from /metrics."""
    _, text = await daemon.get("/metrics")
    found = re.findall(r"^syncd_stream_restarts_total\{[^}]*\} ([0-9.e+]+)$", str(text), re.MULTILINE)
    return int(sum(float(v) for v in found))


async def lost_rows(dsn: str, path: Path) -> int:
    """Items that differ between the file and PostgreSQL (missing, extra or different)."""
    items = {r["id"]: r for r in orjson.loads(path.read_bytes())["items"]}
    conn = await asyncpg.connect(dsn)
    try:
        rows = {r["id"]: r["title"] for r in await conn.fetch("SELECT id, title FROM workspace.workspace_items")}
    finally:
        await conn.close()
    return len(items.keys() ^ rows.keys()) + sum(1 for k in items.keys() & rows.keys() if items[k]["title"] != rows[k])


async def run_faults(cluster: LocalCluster, tmp_path: Path, count: int) -> Run:
    """Start syncd and the writer, inject `count` faults in turn, check recovery after each."""
    config, path = lowdb_config(tmp_path)
    daemon = DaemonProcess(config, cluster.dsn).start()
    run = Run()
    try:
        with lowdb_writer(path):

            await daemon.until(caught_up_with(cluster.dsn, 1), 30, "the writer's first version in PostgreSQL")
            for fault in itertools.islice(itertools.cycle(FAULTS), count):
                await inject(cluster, fault)
                run.faults[fault] = run.faults.get(fault, 0) + 1
                mark = file_clock(path)
                check = caught_up_with(cluster.dsn, mark)
                run.recovery.append(await daemon.until(check, RECOVERY_SECONDS, f"version {mark} after {fault}"))
        await daemon.until(lambda: pg_matches_file(cluster.dsn, path), 30, "PostgreSQL equal to the final file")
        run.lost = await lost_rows(cluster.dsn, path)
        run.restarts = await stream_restarts(daemon)
        assert (await daemon.get("/healthz"))[0] == 200
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
    events = daemon.events()  # JSON lines only, asyncpg's own included
    assert not [e for e in events if e["event"] == "stream failed; restarting from its checkpoint"
                and "stalled" in e["error"]], "a stream stalled"
    # Each fault costs at most one new lease, logged; never a stream fenced by its own stale run.
    assert not [e for e in events if "fenced" in str(e)]
    assert sum(e["event"] == "stream lease acquired" for e in events) <= count + 1
    assert sum(e["event"] == "leadership lost; stepping down to standby" for e in events) >= 1
    return run


def report(capsys: pytest.CaptureFixture[str], name: str, run: Run) -> None:
    """One line on the terminal (the README's fault table is taken from it)."""
    with capsys.disabled():
        print(
            f"\n{name}: faults {sum(run.faults.values())} {run.faults}, process exits 0, "
            f"stream restarts {run.restarts}, slowest recovery {max(run.recovery):.2f}s, rows lost {run.lost}"
        )


async def test_pg_restarts_and_killed_backends_under_a_lowdb_writer(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three rounds of fast restart, immediate restart and backend termination (the issue's nine)."""
    run = await run_faults(cluster, tmp_path, 9)
    report(capsys, "pg faults", run)
    assert run.lost == 0


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_soak_thirty_pg_faults_under_load(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 faults in a row: 0 process exits, 0 stalls (each recovers within 10 s), 0 rows lost."""
    started = time.monotonic()
    run = await run_faults(cluster, tmp_path, 30)
    report(capsys, f"soak ({time.monotonic() - started:.0f}s)", run)
    assert run.lost == 0
    assert len(run.recovery) == 30



async def test_pg_down_at_start_then_up(cluster: LocalCluster, tmp_path: Path) -> None:
    """PostgreSQL down when syncd starts: alive, not ready (role unknown), retrying; once up, it leads
    and applies the file."""
    config, path = lowdb_config(tmp_path)
    write_v7(path, {"items": [item("a1")], "categories": []})
    await asyncio.to_thread(cluster.stop)
    daemon = DaemonProcess(config, cluster.dsn).start()
    try:

        async def alive_not_ready_retrying() -> bool:
            status, body = await readyz(daemon)
            return (
                (await daemon.get("/healthz"))[0] == 200
                and status == 503
                and body.get("postgres") is False
                and body.get("role") == "unknown"
                and daemon.output().count("joining failed") >= 2
            )

        await daemon.until(alive_not_ready_retrying, 20, "alive, not ready, retrying the lock")
        await asyncio.to_thread(cluster.start)
        await daemon.leading(30)
        assert await pg_clock(cluster.dsn) is None  # the clock item is the writer's; a1 is ours
        conn = await asyncpg.connect(cluster.dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM workspace.workspace_items WHERE id = 'a1'") == 1
        finally:
            await conn.close()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
    daemon.events()  # JSON lines only, asyncpg's connection errors included
