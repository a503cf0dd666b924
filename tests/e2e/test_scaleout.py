"""Three real daemons share the streams by per-stream leases, with the outbox relayed to a real Kafka;
kill -9 of one moves its streams within 10 s and nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from syncd.relay import topic_for
from tests.e2e.daemon import SYNCD, DaemonProcess, write_config
from tests.kafka_broker import KafkaBroker, read_topic
from tests.lowdb_files import item, write_v7

GENERIC = ("alpha", "beta", "gamma")
STREAMS = {"workspace", "g-alpha", "g-beta", "g-gamma", "kafka:relay"}


def scaleout_config(tmp_path: Path, kafka: KafkaBroker, prefix: str) -> Path:
    """Four LowDB files (one workspace, three generic) and the relay: five streams."""
    body = f'\n[[lowdb]]\nname = "workspace"\npath = "{tmp_path / "workspace.json"}"\nlayout = "workspace"\n'
    for name in GENERIC:
        body += (
            f'\n[[lowdb]]\nname = "g-{name}"\npath = "{tmp_path / f"{name}.json"}"\nlayout = "generic"\n'
            f'collections = [{{ name = "{name}" }}]\n'
        )
    body += f'\n[kafka]\nbootstrap_servers = "{kafka.bootstrap}"\ntopic_prefix = "{prefix}"\npoll_interval = "50ms"\n'
    return write_config(tmp_path / "syncd.toml", body)


class Writers:
    """Append records to every file, one write per file per step, as the services would."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.count = 0

    def step(self) -> None:
        i = self.count
        self.count += 1
        write_v7(
            self.tmp_path / "workspace.json", {"items": [item(f"w{n}") for n in range(self.count)], "categories": []}
        )
        for name in GENERIC:
            write_v7(self.tmp_path / f"{name}.json", {name: [{"id": f"{name}{n}", "n": n} for n in range(i + 1)]})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.step()
            await asyncio.sleep(0.03)


async def status(daemon: DaemonProcess) -> dict[str, Any]:
    """The parsed /status document ({} while unreachable)."""
    code, body = await daemon.get("/status")
    return body if code == 200 and isinstance(body, dict) else {}


async def test_three_instances_share_streams_and_survive_kill_9(dsn: str, tmp_path: Path, kafka: KafkaBroker) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    config = scaleout_config(tmp_path, kafka, prefix)
    writers = Writers(tmp_path)
    writers.step()
    daemons = [DaemonProcess(config, dsn, instance=name) for name in ("a", "b", "c")]
    conn = await asyncpg.connect(dsn)
    stop = asyncio.Event()
    writing: asyncio.Task[None] | None = None
    victim: DaemonProcess | None = None
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            await daemon.ready()

        async def spread() -> bool:
            owned = [set((await status(d)).get("owned", [])) for d in daemons]
            return sorted(len(o) for o in owned) == [1, 2, 2] and set().union(*owned) == STREAMS

        await daemons[0].until(spread, 30, "five streams spread 2/2/1 over three instances")
        owners = (await status(daemons[0]))["owners"]
        assert {s: o["holder"] for s, o in owners.items()}.keys() == STREAMS

        async def relay_registered() -> bool:
            return bool(await conn.fetchval("SELECT true FROM syncd.outbox_consumers WHERE name = 'kafka-relay'"))

        # The relay's snapshot first, so the writes below reach Kafka as change events.
        await daemons[0].until(relay_registered, 30, "the relay to register (and snapshot)")
        writing = asyncio.create_task(writers.run(stop))
        await asyncio.sleep(0.5)
        owned = {d.env["SYNCD_DAEMON_INSTANCE"]: (await status(d)).get("owned", []) for d in daemons}
        victim = next(d for d in daemons if "workspace" in owned[d.env["SYNCD_DAEMON_INSTANCE"]])
        survivors = [d for d in daemons if d is not victim]
        lost = set((await status(victim))["owned"])
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            owned = [set((await status(d)).get("owned", [])) for d in survivors]
            return set().union(*owned) == STREAMS and sorted(len(o) for o in owned) == [2, 3]

        await survivors[0].until(taken_over, 15, "the survivors to own every stream")
        moved_in = time.monotonic() - killed_at
        assert moved_in < 10, f"{lost} moved in {moved_in:.1f}s"
        # `syncd status` on a survivor names the owner of every stream, the dead one among none.
        shown = subprocess.run(
            [str(SYNCD), "status", "--config", str(config)],
            env=survivors[0].env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        table = [cells for cells in map(str.split, shown.splitlines()) if cells and cells[0] in STREAMS]
        rows = {cells[0]: cells[1].split("@")[0] for cells in table}
        survivor_names = {d.env["SYNCD_DAEMON_INSTANCE"] for d in survivors}
        assert {rows[s] for s in STREAMS} == survivor_names, shown
        stop.set()
        await writing
        total = writers.count

        async def all_applied() -> bool:
            items = await conn.fetchval("SELECT count(*) FROM workspace.workspace_items")
            docs = await conn.fetch("SELECT collection, count(*) AS n FROM syncd.documents GROUP BY collection")
            return items == total and {r["collection"]: r["n"] for r in docs} == dict.fromkeys(GENERIC, total)

        await survivors[0].until(all_applied, 20, f"all {total} records of every file in PostgreSQL")
        # Nothing applied twice: one insert per item in the audit log, across the takeover.
        inserts = await conn.fetch(
            "SELECT key, count(*) AS n FROM syncd.audit_log WHERE table_name = $1 AND op = 'insert' GROUP BY key",
            "workspace.workspace_items",
        )
        assert {r["key"]: r["n"] for r in inserts} == {f"w{n}": 1 for n in range(total)}

        # Kafka saw every insert at least once; deduplicated by the outbox id, exactly once.
        topic = topic_for(prefix, "workspace.workspace_items")

        def every_item(records: list[Any]) -> bool:
            return {r.key.decode() for r in records if r.value is not None} >= {f"w{n}" for n in range(total)}

        records = await read_topic(kafka.bootstrap, topic, every_item, timeout=30)
        changes = {
            h["id"]: orjson.loads(r.value) for r in records if r.value is not None and "id" in (h := dict(r.headers))
        }
        created = Counter(e["after"]["id"] for e in changes.values() if e["op"] == "c")
        snapshot = {r.key.decode() for r in records if "snapshot" in dict(r.headers)}
        assert set(created) | snapshot == {f"w{n}" for n in range(total)}
        assert created, "no insert reached Kafka as a change event"
        assert all(n == 1 for n in created.values()), created
    finally:
        stop.set()
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await conn.close()
        codes = [d.stop() for d in daemons]
    assert [c for d, c in zip(daemons, codes, strict=True) if d is not victim] == [0, 0]
