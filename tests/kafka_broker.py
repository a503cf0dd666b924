"""A real Apache Kafka broker (4.x, KRaft: broker and controller in one JVM) on free loopback ports.

The jars come from Maven Central through `make tools` (tools/kafka/pom.xml → .tools/kafka/libs).
The log directory is formatted with the broker's own StorageTool before the first start, as the
release's `kafka-storage.sh format --standalone` does.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from syncd.cluster import free_port

LIBS = Path(__file__).resolve().parent.parent / ".tools" / "kafka" / "libs"
JAVA = shutil.which("java") or "java"
# A small heap and the serial collector: the broker shares two cores with PostgreSQL and the tests.
JVM_OPTIONS = ("-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaServer
logger.kafka.level = info
"""


class KafkaBroker:
    """One broker+controller process; `bootstrap` is its client address once `start()` returned."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The `host:port` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """The broker's own log (warnings and the started line)."""
        return self.root / "broker.log"

    def _write_config(self) -> Path:
        config = self.root / "server.properties"
        config.write_text(
            "\n".join(
                (
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.root / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "num.network.threads=2",
                    "num.io.threads=2",
                    "background.threads=2",
                )
            )
            + "\n"
        )
        (self.root / "log4j2.properties").write_text(_LOG4J.format(log=self.log))
        return config

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            JAVA,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp",
            f"{LIBS}/*",
            main,
            *args,
        ]

    def format(self) -> None:
        """Format the KRaft log directory with a fresh cluster id (once, before the first start)."""
        if not LIBS.is_dir():
            raise RuntimeError(f"{LIBS} is missing: run `make tools` (it fetches the Kafka jars with mvn)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            # `=`: a base64 id may start with `-`, which would read as an option.
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config), "--standalone"
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Spawn the broker (the caller waits with `until_ready`)."""
        with (self.root / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.root / "server.properties")),
                stdout=out,
                stderr=out,
                env={**os.environ, "KAFKA_HEAP_OPTS": ""},
            )

    async def until_ready(self, timeout: float = 90.0) -> float:
        """Poll with a real client until the broker answers metadata requests; seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kafka broker exited ({self.proc.returncode}):\n{self.output()}")
            try:  # the port first: a client would log every refused connection as an error
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
            except OSError:
                await asyncio.sleep(0.2)
                continue
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            try:
                await admin.start()
                await admin.describe_cluster()
                return time.monotonic() - start
            except (KafkaError, OSError):
                await asyncio.sleep(0.2)
            finally:
                await admin.close()
        raise RuntimeError(f"kafka broker not ready after {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL if it overstays."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def output(self) -> str:
        """The tail of what the broker wrote."""
        parts = [p.read_text(errors="replace")[-3000:] for p in (self.root / "stdout.log", self.log) if p.exists()]
        return "\n".join(parts)


async def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[object]], bool], timeout: float = 30.0
) -> list[object]:
    """Every record of `topic` from the beginning until `done(records)` holds (fails at the deadline)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    records: list[object] = []
    try:
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: {len(records)} records after {timeout}s, condition still false")
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records
