"""The real daemon process: readiness semantics, graceful SIGTERM, leader failover."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.e2e.daemon import DaemonProcess, write_config
from tests.lowdb_files import item, write_v7


async def leases_held(dsn: str) -> int:
    """Stream leases whose lock some session holds right now."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM syncd.stream_owners WHERE held"))
    finally:
        await conn.close()


async def test_ready_then_sigterm_exits_zero_and_releases_the_lock(dsn: str, tmp_path: Path) -> None:
    """A lone instance leads its stream and becomes ready; SIGTERM ends it with exit 0 and the lease released."""
    config, path = lowdb_config(tmp_path)
    write_v7(path, {"items": [item("a1")], "categories": []})
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()
        status, body = await daemon.get("/status")
        assert status == 200
        assert body["leader"] is True
        assert body["owned"] == ["workspace"]
        assert body["owners"] == {"workspace": {"holder": "test", "epoch": 1}}
        assert await leases_held(dsn) == 1
        assert (await daemon.get("/healthz"))[0] == 200
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert await leases_held(dsn) == 0
    assert '"event": "stopped"' in daemon.output()


async def test_standby_takes_over_when_the_leader_is_killed(dsn: str, tmp_path: Path) -> None:
    """kill -9 of the leader: the standby leads within 10 s with a higher fencing epoch, resumes from
    the checkpoint (a write made while nobody led is applied) and applies nothing twice."""
    config, path = lowdb_config(tmp_path)
    write_v7(path, {"items": [item("a1"), item("a2")], "categories": []})
    leader = DaemonProcess(config, dsn, instance="a").start()
    standby = DaemonProcess(config, dsn, instance="b")
    conn = await asyncpg.connect(dsn)
    try:
        await leader.leading()
        standby.start()
        await standby.ready()
        assert (await standby.get("/status"))[1]["leader"] is False
        epoch = (await leader.get("/status"))[1]["epoch"]

        leader.signal(signal.SIGKILL)
        leader.wait(5)
        write_v7(path, {"items": [item("a1"), item("a2"), item("a3")], "categories": []})

        async def standby_leads() -> bool:
            return (await standby.get("/status"))[1]["leader"] is True

        assert await standby.until(standby_leads, 10, "standby to take over") < 10
        assert (await standby.get("/status"))[1]["epoch"] > epoch

        async def has_a3() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM workspace.workspace_items WHERE id = 'a3'"))

        await standby.until(has_a3, 10, "the write made while nobody led")
        # Each record was inserted exactly once: the new leader started from the checkpoint.
        writes = await conn.fetch("SELECT key, op, count(*) AS n FROM syncd.audit_log GROUP BY key, op")
        assert {(r["key"], r["op"]): r["n"] for r in writes} == {("a1", "insert"): 1, ("a2", "insert"): 1,
                                                                 ("a3", "insert"): 1}
    finally:
        await conn.close()
        standby.stop()
        leader.stop()


def lowdb_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config mirroring one workspace file; (config, file)."""
    path = tmp_path / "library.json"
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    return write_config(tmp_path / "syncd.toml", body), path


async def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, object]]:
    """/readyz status and body."""
    status, body = await daemon.get("/readyz")
    return status, body if isinstance(body, dict) else {}


async def test_the_leader_is_not_ready_until_its_initial_snapshot_commits(dsn: str, tmp_path: Path) -> None:
    """A lock held on the items table keeps the first batch from committing: leader, but 503."""
    config, path = lowdb_config(tmp_path)
    write_v7(path, {"items": [item("a1")], "categories": []})
    blocker = await asyncpg.connect(dsn)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE workspace.workspace_items IN ACCESS EXCLUSIVE MODE")
    daemon = DaemonProcess(config, dsn).start()
    try:

        async def leading_but_not_ready() -> bool:
            status, body = await readyz(daemon)
            return status == 503 and body.get("leader") is True and body.get("caught_up") is False

        await daemon.until(leading_but_not_ready, 30, "leader, snapshot not applied, not ready")
        await lock.rollback()
        await daemon.leading()
        assert await blocker.fetchval("SELECT title FROM workspace.workspace_items WHERE id = 'a1'") == "t"
    finally:
        await blocker.close()
        assert daemon.stop() == 0, daemon.output()


class Cut:
    """A TCP forwarder to PostgreSQL that the test can cut, as a network partition would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free port; its number."""
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_postgres_unreachable_means_not_ready_but_alive(dsn: str, tmp_path: Path) -> None:
    """Cut the network to PostgreSQL: /readyz 503 (postgres false), /healthz 200, SIGTERM still exits 0."""
    parts = urlsplit(dsn)
    assert parts.hostname is not None
    assert parts.port is not None
    cut = Cut(parts.hostname, parts.port)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    proxied = urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{await cut.start()}"))
    config, path = lowdb_config(tmp_path)
    write_v7(path, {"items": [item("a1")], "categories": []})
    daemon = DaemonProcess(config, proxied).start()
    try:
        await daemon.leading()
        await cut.cut()

        async def unready_and_alive() -> bool:
            status, body = await readyz(daemon)
            return status == 503 and body.get("postgres") is False and (await daemon.get("/healthz"))[0] == 200

        await daemon.until(unready_and_alive, 15, "/readyz 503 with postgres false while /healthz is 200")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Another process holds the HTTP port: one line naming the address, exit 2, before any I/O."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        daemon = DaemonProcess(write_config(tmp_path / "syncd.toml"), "postgresql://nobody@127.0.0.1:1/none",
                               env={"SYNCD_HTTP_LISTEN": address}).start()
        code = daemon.wait(30)
    lines = daemon.output().splitlines()
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"syncd run: http.listen {address}: cannot listen")
    assert "address already in use" in lines[0]
