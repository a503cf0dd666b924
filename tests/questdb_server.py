"""A real QuestDB server (the jar `make tools` fetched from Maven Central) on free loopback ports.

`QUESTDB_SUITE` is the line upstream runs (its ops docs name 8.2.1, which Maven Central does not
carry; 8.2.0 is the only 8.2 release there) and serves the whole test session; `QUESTDB_LATEST`
is the current release, started for the end-to-end test too. The Makefile reads both names from
this file, so the versions are pinned in one place.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

QUESTDB_SUITE = "8.2.0"
QUESTDB_LATEST = "9.3.4"
JARS = Path(__file__).resolve().parents[1] / ".tools" / "questdb"
HEAP = "-Xmx512m"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class QuestdbServer:
    """Where a running server listens (all on 127.0.0.1) and where it keeps its files."""

    version: str
    http_port: int
    pg_port: int
    health_port: int
    root: Path

    @property
    def log(self) -> Path:
        """The server's stdout and stderr."""
        return self.root / "server.log"


def jar(version: str) -> Path:
    """The fetched jar of `version`; a clear error when `make tools` has not been run."""
    path = JARS / f"questdb-{version}.jar"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make tools` (fetches QuestDB {version} with mvn)")
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_conf(http: int, pg: int, health: int) -> str:
    """conf/server.conf: every listener on loopback, ILP off, telemetry off, few worker threads."""
    return "\n".join(
        [
            f"http.bind.to=127.0.0.1:{http}",
            f"http.min.net.bind.to=127.0.0.1:{health}",
            f"pg.net.bind.to=127.0.0.1:{pg}",
            "line.tcp.enabled=false",
            "line.udp.enabled=false",
            "line.http.enabled=false",
            "telemetry.enabled=false",
            # 2 cores shared by the whole machine: keep the pools small.
            "shared.worker.count=2",
            "http.worker.count=2",
            "pg.worker.count=1",
            "wal.apply.worker.count=1",
            "",
        ]
    )


@contextmanager
def start_questdb(version: str, root: Path) -> Iterator[QuestdbServer]:
    """Start QuestDB `version` with its data under `root`; wait until it answers; stop it after."""
    server = QuestdbServer(version, free_port(), free_port(), free_port(), root)
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "server.conf").write_text(server_conf(server.http_port, server.pg_port, server.health_port))
    cmd = [_java(), HEAP, "-p", str(jar(version)), "-m", "io.questdb/io.questdb.ServerMain", "-d", str(root)]
    with server.log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        _stop(process)


def _java() -> str:
    found = shutil.which("java")
    if found is None:
        raise FileNotFoundError("java not found: run `make tools` (installs a JRE with apt-get)")
    return found


def _wait_ready(server: QuestdbServer, process: subprocess.Popen[bytes]) -> None:
    """Ready = the main HTTP port runs a query (the health port answers a little earlier)."""
    url = f"http://127.0.0.1:{server.http_port}/exec?query=SELECT%201"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"QuestDB {server.version} exited {process.returncode}: see {server.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"QuestDB {server.version} not ready after {START_TIMEOUT:.0f} s: see {server.log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
