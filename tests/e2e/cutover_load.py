"""Steady mixed load on a Workspace-shaped API, as a separate process: `python -m tests.e2e.cutover_load URL RATE OUT`.

Workers each own the items they create, so every answer can be checked against what the worker
itself last wrote: a read must show the worker's last acknowledged write (title, status, priority),
a deleted item must be gone, a list must hold every live item of the worker and none it deleted.
Any other answer, any status other than the expected one, and any connection error is a failure.

Commands on stdin, one per line: `pause` (finish the requests in flight, then answer `paused` on
stdout), `resume` (answer `resumed`), `stop` (write the report to OUT as JSON, answer `stopped`).
Every read of items records which store served it: the PostgreSQL storage client answers with the
snake_case columns beside the camelCase keys (`created_at`), the LowDB one does not.
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

WORKERS = 24
LIVE = 5
"""Items each worker keeps at most: the file stays small, so the load measures the switch, not the file size."""
FIELDS = ("title", "status", "priority", "category")
STATUSES = ("new", "review", "in-progress", "completed", "rejected")
PRIORITIES = ("low", "medium", "high", "critical")
OPS = ("get", "update", "create", "list", "delete", "missing", "categories")
WEIGHTS = (30, 25, 15, 8, 8, 6, 8)


@dataclass
class Report:
    """Everything the drill asserts on."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)
    reads: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, store) of every read of items."""
    latencies: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, seconds, op) of every request."""
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    stopped: float = 0.0
    paused: float = 0.0
    """Seconds spent paused (not loading)."""


class Pacer:
    """Spaces requests evenly at `rate` per second across all workers."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self) -> None:
        """Sleep until this request's slot."""
        now = time.monotonic()
        self._next = max(self._next, now) + self._interval
        await asyncio.sleep(max(0.0, self._next - self._interval - now))


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

    async def step(self) -> None:
        """One request, chosen at random, checked."""
        op = random.choices(OPS, WEIGHTS)[0]
        if op in ("get", "update", "delete") and not self.live:
            op = "create"
        if op == "create" and len(self.live) >= LIVE:
            op = "delete"
        if op == "missing" and not self.deleted:
            op = "list"
        start = time.time()
        try:
            await getattr(self, op)(start)
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            self.fail(op, f"{type(exc).__name__}: {exc}")
        self.report.requests += 1
        self.report.latencies.append((start, time.time() - start, op))

    def fail(self, op: str, what: str) -> None:
        """Record a failed or inconsistent answer."""
        self.report.failures.append(f"worker {self.n} {op} at {time.time():.3f}: {what}")

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP request; (status, JSON body)."""
        async with self.session.request(method, self.url + path, json=body) as response:
            return response.status, await response.json(content_type=None)

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


async def run(url: str, rate: float, out: Path) -> None:
    """Load until `stop`; pause and resume on command."""
    report = Report()
    pacer = Pacer(rate)
    running = asyncio.Event()
    running.set()
    idle = [asyncio.Event() for _ in range(WORKERS)]
    stop = asyncio.Event()
    paused_at = time.time()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=WORKERS)) as session:
        workers = [Worker(n, session, url, report) for n in range(WORKERS)]

        async def loop(worker: Worker, done: asyncio.Event) -> None:
            while not stop.is_set():
                if not running.is_set():
                    done.set()
                    await running.wait()
                    continue
                done.clear()
                await pacer.wait()
                await worker.step()
            done.set()

        tasks = [asyncio.create_task(loop(w, e)) for w, e in zip(workers, idle, strict=True)]
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (line := (await reader.readline()).decode().strip()) != "stop" and line:
            if line == "pause":
                running.clear()
                await asyncio.gather(*(e.wait() for e in idle))
                paused_at = time.time()
            elif line == "resume":
                report.paused += time.time() - paused_at
                running.set()
            print(f"{line}d" if line != "pause" else "paused", flush=True)
        stop.set()
        running.set()
        await asyncio.gather(*tasks)
    report.stopped = time.time()
    for w in workers:
        report.live.update(w.live)
        report.deleted.extend(w.deleted)
    out.write_bytes(orjson.dumps(report.__dict__))
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])))
