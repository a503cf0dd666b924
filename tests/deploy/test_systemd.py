"""deploy/systemd: the unit passes `systemd-analyze verify` and its security audit, a broken copy
fails, and the real daemon speaks the Type=notify protocol the unit relies on."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.config import Config
from tests.e2e.daemon import DaemonProcess, write_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "syncd.service"
INSTALLED_SYNCD = "/opt/syncd/.venv/bin/syncd"
SYNCD = Path(sys.executable).with_name("syncd")

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def local_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart/ExecStartPre pointing at this checkout's syncd (verify checks it exists)."""
    unit = tmp_path / "syncd.service"
    unit.write_text((text if text is not None else UNIT.read_text()).replace(INSTALLED_SYNCD, str(SYNCD)))
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze offline."""
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


def verify(unit: Path) -> str:
    """Everything `systemd-analyze verify` objects to: fatal errors and warnings alike."""
    result = analyze("verify", str(unit))
    return result.stderr + ("" if result.returncode == 0 else f"\nexit {result.returncode}")


@needs_systemd
def test_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    assert verify(local_unit(tmp_path)) == ""


@needs_systemd
@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (("Type=notify", "Type=notifyy"), "Failed to parse service type"),
        ((INSTALLED_SYNCD + " run", "/nonexistent/syncd run"), "is not executable"),
        ((INSTALLED_SYNCD + " run", "relative/syncd run"), "Neither a valid executable name nor an absolute path"),
    ],
)
def test_a_broken_unit_fails_verify(tmp_path: Path, broken: tuple[str, str], why: str) -> None:
    assert why in verify(local_unit(tmp_path, UNIT.read_text().replace(*broken)))


@needs_systemd
def test_unit_is_hardened(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit OK (the best band: exposure below 2.0)."""
    result = analyze("security", "--offline=true", str(local_unit(tmp_path)))
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.split(":")[-1].split()[1] == "OK", verdict


def test_unit_directives_the_daemon_relies_on() -> None:
    """Type=notify with a watchdog, restart on failure, a dedicated user, writable paths only where needed."""
    directives = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert directives["Type"] == "notify"
    assert directives["Restart"] == "on-failure"
    assert directives["User"] == "syncd"
    assert directives["ProtectSystem"] == "strict"
    assert directives["NoNewPrivileges"] == "yes"
    assert directives["WatchdogSec"]
    assert "/var/lib/tradingsystem/workspace" in directives["ReadWritePaths"]


def test_shipped_config_validates() -> None:
    """/etc/syncd/syncd.toml as shipped loads with the DSN from the env file."""
    environ = {"SYNCD_PG_DSN": "postgresql://syncd@db/tradingsystem"}
    config = Config.load(ROOT / "deploy" / "systemd" / "syncd.toml", environ)
    assert [f.name for f in config.lowdb] == ["workspace", "documentation"]


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()

    def drain(self) -> list[str]:
        """Every message received so far."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    async def until(self, field: str, timeout: float = 20.0) -> None:
        """Wait for a message containing `field` (e.g. `READY=1`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(field in m.splitlines() for m in self.drain()):
            if loop.time() > deadline:
                raise AssertionError(f"no {field} in {self.messages}")
            await asyncio.sleep(0.02)


async def test_daemon_speaks_sd_notify(dsn: str, tmp_path: Path) -> None:
    """READY=1, WATCHDOG=1 pings within the watchdog interval, STATUS= leader, STOPPING=1 on SIGTERM."""
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    daemon = DaemonProcess(write_config(tmp_path / "syncd.toml"), dsn, env=env).start()
    try:
        await notify.until("READY=1")
        await daemon.leading()
        await notify.until("WATCHDOG=1", timeout=2.0)
        assert any(line.startswith("STATUS=leader") for m in notify.drain() for line in m.splitlines())
        pings = sum(m.splitlines().count("WATCHDOG=1") for m in notify.drain())
        await asyncio.sleep(1.2)
        assert sum(m.splitlines().count("WATCHDOG=1") for m in notify.drain()) > pings
    finally:
        code = daemon.stop()
        notify.drain()
        notify.close()
    assert code == 0
    assert any("STOPPING=1" in m.splitlines() for m in notify.messages)
