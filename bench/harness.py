"""The bench method every scenario shares: a PostgreSQL, fresh migrated databases, and `interleave`.

A scenario plugs in by measuring through `Bench.interleave` (or `Bench.repeat` for a single
method): each method is run once as a discarded warm-up, then `repeats` rounds follow with the
methods' order rotated every round (round r starts with method r mod n), so neither a cold cache
nor a slow minute of the shared machine favours one method. Every line keeps all its samples, their
min/median/max, the 1-minute load average seen during them and the share of the machine's CPU that
other processes (not this bench, its children or its PostgreSQL) used meanwhile. Results go to
`bench/results/<date>.json`; `bench.readme` renders the README's figures from that file.

Plugging in a scenario: a module with `async def run(bench: Bench) -> None` that calls
`bench.interleave(...)` / `bench.repeat(...)` / `bench.record(...)`, and optionally `TARGETS`, listed
in `bench/__main__.py`'s SCENARIOS. A method is an async callable returning one `Sample`.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import psutil

from syncd.cluster import temporary_database, throwaway_server
from syncd.database import connect, init_connection
from syncd.migrate import migrate

REPEATS = 3
"""Measured rounds per scenario, after one discarded warm-up round."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one method: a value in the line's unit (seconds are turned into rates)."""

    value: float
    extra: Mapping[str, float] = field(default_factory=dict)
    """Side figures of this run (peak RSS MiB, a p99, ...): min/median/max are kept for each."""


@dataclass(frozen=True, slots=True)
class Line:
    """One row of the results: a (scenario, method) pair and its repeated samples."""

    section: str
    scenario: str
    method: str
    unit: str
    n: int
    samples: tuple[float, ...]
    load: tuple[float, float]
    others_cpu: float
    """Percent of all CPUs used by other processes while this line's samples ran."""
    extra: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    note: str = ""

    @property
    def min(self) -> float:
        """Smallest sample."""
        return min(self.samples)

    @property
    def median(self) -> float:
        """Median sample: what ratios and targets use."""
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        """Largest sample."""
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        """The line for the results file, with its statistics spelled out."""
        return {**asdict(self), "min": self.min, "median": self.median, "max": self.max}


Method = Callable[[], Awaitable[Sample]]


class LoadMeter:
    """Load average and other processes' CPU share between `start()` and `stop()`."""

    def __init__(self, own_pids: Callable[[], set[int]]) -> None:
        self._own_pids = own_pids
        self._loads: list[float] = []
        self._busy = 0.0
        self._own = 0.0
        self._wall = 0.0
        self._mark: tuple[float, float, float] | None = None

    def start(self) -> None:
        """Begin a measured stretch."""
        self._loads.append(os.getloadavg()[0])
        self._mark = (time.monotonic(), _busy_seconds(), _own_seconds(self._own_pids()))

    def stop(self) -> None:
        """End the stretch begun by `start()`."""
        assert self._mark is not None
        wall, busy, own = self._mark
        self._wall += time.monotonic() - wall
        self._busy += _busy_seconds() - busy
        self._own += _own_seconds(self._own_pids()) - own
        self._loads.append(os.getloadavg()[0])
        self._mark = None

    @property
    def load(self) -> tuple[float, float]:
        """Lowest and highest 1-minute load average seen."""
        return (min(self._loads), max(self._loads)) if self._loads else (0.0, 0.0)

    @property
    def others_cpu(self) -> float:
        """Percent of all CPUs that processes outside the bench used."""
        capacity = self._wall * (psutil.cpu_count() or 1)
        return max(0.0, 100 * (self._busy - self._own) / capacity) if capacity else 0.0


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def _own_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class Bench:
    """What a scenario gets: the server DSN, fresh databases, interleaved measurement, the results."""

    def __init__(self, server_dsn: str, *, repeats: int = REPEATS, quick: bool = False) -> None:
        self.dsn = server_dsn
        self.repeats = repeats
        self.quick = quick
        """`--quick`: small sizes, to check that every scenario runs (figures not meaningful)."""
        self.lines: list[Line] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        """Scenario-specific tables (scale curves, plans) stored in the results file as they are."""
        self._server_pids: set[int] = set()

    async def find_server(self) -> None:
        """Note the PostgreSQL postmaster (when local) so its CPU counts as the bench's own."""
        conn = await asyncpg.connect(self.dsn)
        try:
            datadir = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        except asyncpg.PostgresError:
            return
        finally:
            await conn.close()
        try:
            with open(f"{datadir}/postmaster.pid") as pidfile:
                pid = int(pidfile.readline())
        except (OSError, ValueError, TypeError):
            return
        if pid:
            self._server_pids = {pid}

    def own_pids(self) -> set[int]:
        """This process, the PostgreSQL postmaster, and all their descendants."""
        pids: set[int] = set()
        for root in {os.getpid(), *self._server_pids}:
            try:
                proc = psutil.Process(root)
                pids |= {root, *(c.pid for c in proc.children(recursive=True))}
            except psutil.Error:
                continue
        return pids

    async def interleave(
        self,
        section: str,
        scenario: str,
        methods: Mapping[str, Method],
        *,
        unit: str,
        n: int | Mapping[str, int],
        notes: Mapping[str, str] | None = None,
        warmup: bool = True,
    ) -> list[Line]:
        """Warm-up round (discarded), then `repeats` rounds in rotated order; one Line per method.

        `n` is the size each method ran at: one figure, or one per method (per-row methods run fewer).
        """
        names = list(methods)
        if warmup:
            for name in names:
                await methods[name]()
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        meters = {name: LoadMeter(self.own_pids) for name in names}
        for r in range(self.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                meters[name].start()
                try:
                    samples[name].append(await methods[name]())
                finally:
                    meters[name].stop()
        size = {name: n if isinstance(n, int) else n[name] for name in names}
        lines = [
            Line(section, scenario, name, unit, size[name], tuple(s.value for s in samples[name]), meters[name].load,
                 round(meters[name].others_cpu, 1), _extras(samples[name]), (notes or {}).get(name, ""))
            for name in names
        ]
        self.lines += lines
        for line in lines:
            _print(line)
        return lines

    async def repeat(self, section: str, scenario: str, method: str, run: Method, *, unit: str, n: int,
                     note: str = "", warmup: bool = True) -> Line:
        """`interleave` with a single method."""
        (line,) = await self.interleave(section, scenario, {method: run}, unit=unit, n=n,
                                        notes={method: note}, warmup=warmup)
        return line

    def record(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Store a scenario-specific table (e.g. a scale curve) in the results."""
        self.tables[name] = rows

    def get(self, section: str, scenario: str, method: str) -> Line | None:
        """A measured line, if that scenario ran."""
        for line in self.lines:
            if (line.section, line.scenario, line.method) == (section, scenario, method):
                return line
        return None


def _extras(samples: Sequence[Sample]) -> dict[str, tuple[float, float, float]]:
    keys = {k for s in samples for k in s.extra}
    out: dict[str, tuple[float, float, float]] = {}
    for key in sorted(keys):
        values = [s.extra[key] for s in samples if key in s.extra]
        out[key] = (min(values), statistics.median(values), max(values))
    return out


def _print(line: Line) -> None:
    print(
        f"  {line.section}: {line.scenario} / {line.method}: median {line.median:,.1f} {line.unit} "
        f"(min {line.min:,.1f}, max {line.max:,.1f}; load {line.load[0]:.1f}-{line.load[1]:.1f}, "
        f"others {line.others_cpu:.0f}% CPU)",
        flush=True,
    )


class PeakRss:
    """A process's RSS high-water mark above its level on entry, sampled every 5 ms meanwhile."""

    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base_mib = self.peak_mib = self._proc.memory_info().rss / 2**20

    @property
    def growth_mib(self) -> float:
        """Peak minus the RSS on entry."""
        return max(0.0, self.peak_mib - self.base_mib)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.peak_mib = max(self.peak_mib, self._proc.memory_info().rss / 2**20)
            except psutil.Error:
                return


MEMORY_FLOOR_MIB = 1.0
"""Below this a memory figure is noise (allocator pages, sampling): not fitted."""


def fit(points: list[dict[str, Any]], x: str, ys: Sequence[str]) -> list[dict[str, Any]]:
    """The points plus one row of log-log least-squares exponents (y ∝ x^k) for each `ys` column.

    A memory column (named `*_mib`) is fitted on its points at or above MEMORY_FLOOR_MIB only; the
    cell then says from how many sizes, and "flat" when fewer than two are left (a growth that stays
    under the floor does not grow with x). A log of zero never enters a fit.
    """
    out = list(points)
    exponents: dict[str, Any] = {x: "exponent"}
    for y in ys:
        floor = MEMORY_FLOOR_MIB if y.endswith("_mib") else 0.0
        kept = [p for p in points if p[y] > 0 and p[y] >= floor]
        k = _slope([(math.log(p[x]), math.log(p[y])) for p in kept]) if len(kept) >= 2 else None
        if k is None and floor and kept:
            exponents[y] = f"- (one size at {floor:g} MiB or more)"
        elif k is None:
            exponents[y] = f"flat (< {floor:g} MiB)" if floor else None
        elif len(kept) < len(points):
            exponents[y] = f"{k:.2f} ({len(kept)} largest sizes)"
        else:
            exponents[y] = k
    out.append(exponents)
    return out


def _slope(pairs: list[tuple[float, float]]) -> float | None:
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    var = sum((a - mx) ** 2 for a, _ in pairs)
    return round(sum((a - mx) * (b - my) for a, b in pairs) / var, 2) if var else None



def rate(rows: int, seconds: float) -> float:
    """Rows per second."""
    return rows / seconds if seconds > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Measure:
    """One single-run figure (a scenario not yet measured through `Bench.interleave`)."""

    scenario: str
    method: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        """Rows per second."""
        return rate(self.rows, self.seconds)


@contextmanager
def server() -> Iterator[str]:
    """SYNCD_BENCH_DSN if set, else a throwaway cluster removed afterwards."""
    with throwaway_server(os.environ.get("SYNCD_BENCH_DSN"), "syncd-bench-pg-") as dsn:
        yield dsn


@asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    """A new database with every migration applied; dropped afterwards."""
    async with temporary_database(server_dsn, "bench") as dsn:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn


async def make_pool(dsn: str, size: int = 2, connection_class: type[asyncpg.Connection] = asyncpg.Connection
                    ) -> asyncpg.Pool:
    """A pool with syncd's codecs."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=init_connection,
                                     connection_class=connection_class)
    assert pool is not None
    return pool


class Stopwatch:
    """Accumulates wall time over several timed sections."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Time the enclosed block."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
