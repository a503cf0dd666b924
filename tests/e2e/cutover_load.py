"""Steady mixed load on a Workspace-shaped API, as a separate process: `python -m tests.e2e.cutover_load URL RATE OUT`.

Open loop: request i is due at a fixed moment (start + i / RATE), whatever became of the earlier
ones, and goes to whichever worker is idle. A slow answer therefore never lowers the rate offered;
when every worker is busy the load falls behind its schedule, and each request records how late it
was sent (`lag`), so a reader tells "served what was offered" from "offered less". Connections are
kept alive (one per worker) and dropped by the client before the service would (Node closes an
idle one after 5 s), so a pause never leaves a worker a socket the server is closing.

Workers each own the items they create, so every answer can be checked against what the worker
itself last wrote: a read must show the worker's last acknowledged write (title, status, priority),
a deleted item must be gone, a list must hold every live item of the worker and none it deleted.
Any other answer, any status other than the expected one, and any connection error is a failure.

Commands on stdin, one per line: `pause` (send nothing more, finish the requests in flight, then
answer `paused` on stdout), `resume` (the schedule starts again from now; answer `resumed`), `stop`
(write the report to OUT as JSON, answer `stopped`). Every read of items records which store served
it: the PostgreSQL storage client answers with the snake_case columns beside the camelCase keys
(`created_at`), the LowDB one does not.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

WORKERS = 64
"""Idle workers take the next due request: enough that a handover's held writes (each holds its
worker) leave others to send the reads for a few hundred ms, few enough that an overloaded machine
queues a bounded number of writes that a handover must let finish (more workers made a rollback's
drain outlast its bound at load averages above 8)."""
LIVE = 3
"""Items each worker keeps at most: the file stays small, so the load measures the switch, not the file size."""
KEEPALIVE_S = 3.0
"""An idle connection is closed by the client first: Node's keepAliveTimeout is 5 s."""
FIELDS = ("title", "status", "priority", "category")
STATUSES = ("new", "review", "in-progress", "completed", "rejected")
PRIORITIES = ("low", "medium", "high", "critical")
OPS = ("get", "update", "create", "list", "delete", "missing", "categories")
WEIGHTS = (30, 25, 15, 8, 8, 6, 8)


@dataclass
class Report:
    """Everything the drill asserts on."""

    requests: int = 0
    """Requests answered (checked or failed)."""
    due: int = 0
    """Requests whose moment came while the load ran (sent or not): `requests` falls short when it lagged."""
    loading: float = 0.0
    """Seconds the load ran (pauses excluded): `due` is `rate` times this."""
    failures: list[str] = field(default_factory=list)
    reads: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, store) of every read of items."""
    latencies: list[tuple[float, float, str, float]] = field(default_factory=list)
    """(start, seconds, op, lag) of every request: sent at `start` (Unix time), answered `seconds` later,
    sent `lag` seconds after it was due (no worker was idle, or the event loop was busy)."""
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


class Schedule:
    """Request i is due at origin + i / rate; a pause moves the origin so that nothing is due meanwhile."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.due = 0
        """Requests made due so far."""
        self.loading = 0.0
        """Seconds run so far, up to the last `halt`."""
        self._origin = self._resumed = time.monotonic()

    async def next(self) -> float:
        """Sleep until the next request is due; when it was due (monotonic clock)."""
        due = self._origin + self.due / self.rate
        self.due += 1
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        return due

    def halt(self) -> None:
        """Stop the clock: every request whose moment came counts as due, sent or not."""
        now = time.monotonic()
        self.due = int((now - self._origin) * self.rate) + 1  # request i is due at origin + i / rate
        self.loading += now - self._resumed

    def restart(self) -> None:
        """Start the clock again: the next request is due now."""
        self._resumed = time.monotonic()
        self._origin = self._resumed - self.due / self.rate


class Worker:
    """One client of the API: its own items, checked on every answer."""

    def __init__(self, n: int, session: aiohttp.ClientSession, url: str, report: Report) -> None:
        self.n = n
        self.session = session
        self.url = url
        self.report = report
        self.live: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.created = 0

    async def step(self, lag: float) -> None:
        """One request, chosen at random, checked; it was due `lag` seconds ago."""
        op = random.choices(OPS, WEIGHTS)[0]
        if op in ("get", "update", "delete") and not self.live:
            op = "create"
        if op == "create" and len(self.live) >= LIVE:
            op = "delete"
        if op == "missing" and not self.deleted:
            op = "list"
        start, clock = time.time(), time.perf_counter()  # Unix time to match other processes, a steady clock to time
        try:
            await getattr(self, op)(start)
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            self.fail(op, f"{type(exc).__name__}: {exc}")
        self.report.requests += 1
        self.report.latencies.append((start, time.perf_counter() - clock, op, lag))

    def fail(self, op: str, what: str) -> None:
        """Record a failed or inconsistent answer."""
        self.report.failures.append(f"worker {self.n} {op} at {time.time():.3f}: {what}")

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP request; (status, JSON body)."""
        async with self.session.request(method, self.url + path, json=body) as response:
            return response.status, await response.json(loads=orjson.loads, content_type=None)

    def check(self, op: str, key: str, data: Any) -> None:
        """`data` must show this worker's last write of `key`."""
        want = self.live[key]
        got = {f: data.get(f) for f in FIELDS}
        if got != want:
            self.fail(op, f"{key} is {got}, last written {want}")

    def read(self, start: float, data: Any) -> None:
        """Note which store served a read of items."""
        sample = data[0] if isinstance(data, list) and data else data
        if isinstance(sample, dict):
            self.report.reads.append((start, time.time(), "pg" if "created_at" in sample else "lowdb"))

    async def create(self, _start: float) -> None:
        self.created += 1
        body = {"title": f"w{self.n} item {self.created}", "description": "load", "category": "feature",
                "priority": random.choice(PRIORITIES)}
        status, answer = await self.call("POST", "/api/items", body)
        if status != 201:
            return self.fail("create", f"{status} {answer}")
        data = answer["data"]
        self.live[data["id"]] = {"title": body["title"], "status": "new", "priority": body["priority"],
                                 "category": "feature"}
        self.check("create", data["id"], data)
        return None

    async def get(self, start: float) -> None:
        key = random.choice(list(self.live))
        status, answer = await self.call("GET", f"/api/items/{key}")
        if status != 200:
            return self.fail("get", f"{key}: {status} {answer}")
        self.read(start, answer["data"])
        self.check("get", key, answer["data"])
        return None

    async def update(self, _start: float) -> None:
        key = random.choice(list(self.live))
        change = random.choice([{"status": random.choice(STATUSES)}, {"priority": random.choice(PRIORITIES)},
                                {"title": f"w{self.n} renamed {random.randrange(10**6)}"}])
        status, answer = await self.call("PUT", f"/api/items/{key}", change)
        if status != 200:
            return self.fail("update", f"{key}: {status} {answer}")
        self.live[key] = {**self.live[key], **change}
        self.check("update", key, answer["data"])
        return None

    async def delete(self, _start: float) -> None:
        key = random.choice(list(self.live))
        status, answer = await self.call("DELETE", f"/api/items/{key}")
        if status != 200:
            return self.fail("delete", f"{key}: {status} {answer}")
        del self.live[key]
        self.deleted.append(key)
        return None

    async def missing(self, _start: float) -> None:
        key = random.choice(self.deleted)
        status, answer = await self.call("GET", f"/api/items/{key}")
        if status != 404:
            self.fail("missing", f"deleted {key} answered {status} {answer}")

    async def list(self, start: float) -> None:
        status, answer = await self.call("GET", "/api/items")
        if status != 200:
            return self.fail("list", f"{status} {answer}")
        self.read(start, answer["data"])
        listed = {r["id"]: r for r in answer["data"]}
        for key in self.live:
            if key not in listed:
                self.fail("list", f"{key} (live) is not listed")
            else:
                self.check("list", key, listed[key])
        for key in self.deleted:
            if key in listed:
                self.fail("list", f"{key} (deleted) is listed")
        return None

    async def categories(self, _start: float) -> None:
        status, answer = await self.call("GET", "/api/categories")
        if status != 200 or not answer["data"]:
            self.fail("categories", f"{status} {answer}")


class Load:
    """The schedule, the workers and the report; `send` runs until `stop()`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, rate: float) -> None:
        self.report = Report()
        self.schedule = Schedule(rate)
        self.workers = [Worker(n, session, url, self.report) for n in range(WORKERS)]
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        for worker in self.workers:
            self.idle.put_nowait(worker)
        self.running = asyncio.Event()
        self.running.set()
        self.stopped = False
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self) -> None:
        """Hand each due request to an idle worker, on time whatever the earlier ones are doing."""
        while True:
            await self.running.wait()
            if self.stopped:
                return
            due = await self.schedule.next()
            worker = await self.idle.get()  # all busy: the load falls behind, and the lag says by how much
            if self.stopped or not self.running.is_set():  # a pause or stop came meanwhile
                self.idle.put_nowait(worker)
                continue
            task = asyncio.create_task(self.one(worker, max(0.0, time.monotonic() - due)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def one(self, worker: Worker, lag: float) -> None:
        """One request of `worker`, which is idle again afterwards."""
        try:
            await worker.step(lag)
        finally:
            self.idle.put_nowait(worker)

    async def quiet(self) -> None:
        """Send nothing more until `restart`; return once the requests in flight are answered."""
        self.running.clear()
        self.schedule.halt()
        while self.tasks:
            await asyncio.gather(*self.tasks)

    def restart(self) -> None:
        """Offer the load again, from now."""
        self.schedule.restart()
        self.running.set()

    async def stop(self) -> Report:
        """Finish the requests in flight and complete the report."""
        if self.running.is_set():
            self.schedule.halt()
        self.report.due, self.report.loading = self.schedule.due, self.schedule.loading
        self.stopped = True
        self.running.set()
        while self.tasks:
            await asyncio.gather(*self.tasks)
        for worker in self.workers:
            self.report.live.update(worker.live)
            self.report.deleted.extend(worker.deleted)
        return self.report


async def run(url: str, rate: float, out: Path) -> None:
    """Load until `stop`; pause and resume on command."""
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=WORKERS, keepalive_timeout=KEEPALIVE_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, json_serialize=_dumps) as session:
        load = Load(session, url, rate)
        sender = asyncio.create_task(load.send())
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (line := (await reader.readline()).decode().strip()) != "stop" and line:
            if line == "pause":
                await load.quiet()
            elif line == "resume":
                load.restart()
            print(f"{line}d" if line != "pause" else "paused", flush=True)
        report = await load.stop()
        await sender
    out.write_bytes(orjson.dumps(report.__dict__))
    print("stopped", flush=True)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])))
