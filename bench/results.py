"""The results file (`bench/results/<date>.json`) and the issue's targets judged from it.

A results file holds every line a `make bench` run measured (all samples, min/median/max, load),
the scenario tables (scale curves, plans), and the run's wall time. Targets are evaluated from the
file alone, so `python -m bench.readme` renders the same verdicts the run printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what the issue asks, what the run got, met / missed / not measured."""

    target: str
    want: str
    got: str
    met: bool | None

    @property
    def status(self) -> str:
        """'met', 'MISSED' or 'not measured'."""
        return "not measured" if self.met is None else "met" if self.met else "MISSED"


class Results:
    """A results document with lookups by (section, scenario, method)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    @classmethod
    def load(cls, path: Path) -> Results:
        """Read a results file."""
        return cls(orjson.loads(path.read_bytes()))

    def save(self, directory: Path = RESULTS, *, merge: bool = False) -> Path:
        """Write `<date>.json` (the run's UTC date) and return its path.

        `merge` (a `--only` run): the day's file keeps the lines of every section this run did not
        measure, and the tables it did not record, so running one scenario never wipes the others.
        """
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.document['date']}.json"
        if merge and path.exists():
            self.document = _merged(orjson.loads(path.read_bytes()), self.document)
        path.write_bytes(orjson.dumps(self.document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        return path

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every measured line."""
        lines: list[dict[str, Any]] = self.document.get("lines", [])
        return lines

    def line(self, section: str, scenario: str, method: str) -> dict[str, Any] | None:
        """One line, or None if it was not measured."""
        for line in self.lines:
            if (line["section"], line["scenario"], line["method"]) == (section, scenario, method):
                return line
        return None

    def section(self, section: str) -> Iterator[dict[str, Any]]:
        """The lines of one section, in run order."""
        return (line for line in self.lines if line["section"] == section)

    def table(self, name: str) -> list[dict[str, Any]]:
        """A scenario table, empty if absent."""
        rows: list[dict[str, Any]] = self.document.get("tables", {}).get(name, [])
        return rows

    def carry(self, other: Results, sections: list[str], tables: list[str]) -> None:
        """Take `sections` (lines) and `tables` from another run, recorded as carried with its time.

        For a run cut short: the README then shows those figures with where they come from.
        """
        self.document["lines"] = self.lines + [line for line in other.lines if line["section"] in sections]
        self.document.setdefault("tables", {}).update({t: other.table(t) for t in tables if other.table(t)})
        self.document.setdefault("carried", []).append(
            {"sections": sections, "tables": tables, "finished_at": other.document.get("finished_at")}
        )

    def verdicts(self) -> list[Verdict]:
        """Every target of the issue, judged from this file."""
        return [v for check in TARGETS for v in check(self)]


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    sections = {line["section"] for line in new.get("lines", [])}
    kept = [line for line in old.get("lines", []) if line["section"] not in sections]
    return {**new, "complete": False, "lines": kept + new.get("lines", []),
            "tables": {**old.get("tables", {}), **new.get("tables", {})}}


def latest(directory: Path = RESULTS) -> Path:
    """The newest results file."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no results in {directory}: run `make bench`")
    return files[-1]


def _sink_vs_copy(r: Results) -> list[Verdict]:
    sink, raw = r.line("sink", "first load", "sink"), r.line("sink", "first load", "raw COPY")
    if sink is None or raw is None:
        return [Verdict("sink first load vs raw COPY", ">= 0.9x", "-", None)]
    ratio = sink["median"] / raw["median"]
    return [Verdict("sink first load vs raw COPY", ">= 0.9x", f"{ratio:.2f}x", ratio >= 0.9)]


def _sink_vs_dlt(r: Results) -> list[Verdict]:
    out = []
    for scenario in ("first load", "unchanged re-apply", "10% changed"):
        sink = r.line("sink", scenario, "sink")
        dlts = [r.line("sink", scenario, m) for m in ("dlt merge (Arrow)", "dlt merge (dict rows)")]
        best = max((d["median"] for d in dlts if d is not None), default=None)
        name = f"sink vs dlt's best: {scenario}"
        if sink is None or best is None:
            out.append(Verdict(name, ">= 4x", "-", None))
            continue
        ratio = sink["median"] / best
        got = f"{ratio:.1f}x"
        raw = r.line("sink", scenario, "raw COPY")
        if raw is not None:  # the bound: dlt loads a bare table, raw COPY the indexed one with triggers
            got += f" (raw COPY {raw['median'] / best:.1f}x)"
        out.append(Verdict(name, ">= 4x", got, ratio >= 4))
    return out


def _lowdb_latency(r: Results) -> list[Verdict]:
    out = []
    for records, stat, limit in ((1_000, "p50_ms", 5.0), (10_000, "p50_ms", 10.0), (100_000, "p99_ms", 100.0)):
        line = r.line("lowdb", f"edit → commit, {records:,} records", "daemon")
        name = f"LowDB edit → commit {stat[:3]} at {records // 1000}k records"
        if line is None or stat not in line["extra"]:
            out.append(Verdict(name, f"<= {limit:g} ms", "-", None))
            continue
        got = line["extra"][stat][1]
        out.append(Verdict(name, f"<= {limit:g} ms", f"{got:.1f} ms", got <= limit))
    return out


def _lowdb_memory(r: Results) -> list[Verdict]:
    line = r.line("lowdb", "first load, 500,000 records", "daemon")
    if line is None:
        return [Verdict("LowDB 500k first load (largest sample)", "<= 20 s", "-", None),
                Verdict("LowDB 500k peak RSS / file size (largest)", "<= 2.5x", "-", None)]
    # The largest sample: a fast one may be a /readyz that turned ready before the file committed.
    ratio = line["extra"]["rss_over_file"][2]
    return [Verdict("LowDB 500k first load (largest sample)", "<= 20 s", f"{line['max']:.1f} s", line["max"] <= 20),
            Verdict("LowDB 500k peak RSS / file size (largest)", "<= 2.5x", f"{ratio:.2f}x", ratio <= 2.5)]


def _reporting(r: Results) -> list[Verdict]:
    out = []
    for view in ("signals_daily", "signals_by_channel"):
        line = r.line("reporting", f"{view} (all time)", "view")
        name = f"reporting.{view} all time at 10M signals"
        if line is None:
            out.append(Verdict(name, "<= 100 ms", "-", None))
            continue
        out.append(Verdict(name, "<= 100 ms", f"{line['median']:.1f} ms", line["median"] <= 100))
    return out


def _wall(r: Results) -> list[Verdict]:
    seconds = r.document.get("wall_seconds")
    complete = r.document.get("complete", False)
    if seconds is None or not complete:  # a partial run says nothing about the whole
        return [Verdict("make bench wall time (every scenario)", "< 20 min", "-", None)]
    return [Verdict("make bench wall time (every scenario)", "< 20 min", f"{seconds / 60:.1f} min", seconds < 1200)]


def _questdb_backfill(r: Results) -> list[Verdict]:
    out = []
    scenario = next((line["scenario"] for line in r.section("questdb") if line["method"] == "raw COPY"), None)
    raw = r.line("questdb", scenario, "raw COPY") if scenario else None
    for method in ("syncd backfill via /exec", "syncd backfill via PG wire"):
        line = r.line("questdb", scenario, method) if scenario else None
        name = f"QuestDB {method} vs raw COPY"
        if line is None or raw is None:
            out.append(Verdict(name, ">= 0.6x", "-", None))
            continue
        ratio = line["median"] / raw["median"]
        out.append(Verdict(name, ">= 0.6x", f"{ratio:.2f}x", ratio >= 0.6))
    return out


def _questdb_stream(r: Results) -> list[Verdict]:
    """The poller keeps up with a 10,000 rows/s writer: it applies at least 95% of that rate."""
    name, want = "QuestDB poller → sink beside a 10,000 rows/s writer", ">= 9,500 rows/s"
    line = r.line("questdb", "steady stream, 10,000 rows/s written", "poller → sink")
    if line is None:
        return [Verdict(name, want, "-", None)]
    lag = line["extra"].get("lag_p99_s")
    got = f"{line['median']:,.0f} rows/s" + (f", lag p99 {lag[1]:.1f} s" if lag else "")
    return [Verdict(name, want, got, line["median"] >= 9_500)]


def _relay(r: Results) -> list[Verdict]:
    name = "relay events/s beside the sink's rows/s (same rows)"
    lines = {line["method"]: line for line in r.section("relay")}
    sink, relay = lines.get("sink (PostgreSQL, tracked table)"), lines.get("relay (outbox → Kafka)")
    if sink is None or relay is None:
        return [Verdict(name, "both measured", "-", None)]
    got = f"{relay['median']:,.0f} events/s vs {sink['median']:,.0f} rows/s"
    return [Verdict(name, "both measured", got, True)]


CUTOVER_CLIENTS = ("node-postgres client", "Prisma 7 client")


def _cutover(r: Results) -> list[Verdict]:
    """The drill's load served through a promote and a rollback, and the p99 a handover adds (measured)."""
    lines = [r.line("cutover", "handover under load", client) for client in CUTOVER_CLIENTS]
    served_name, added_name = "cutover drill load served (both storage clients)", "p99 a handover adds"
    found = [line for line in lines if line is not None]
    if len(found) < len(CUTOVER_CLIENTS):
        return [Verdict(served_name, ">= 200 requests/s", "-", None), Verdict(added_name, "measured", "-", None)]
    served = [line["extra"]["served_per_s"][1] for line in found]
    got = ", ".join(f"{rate:,.0f}/s" for rate in served)
    added = ", ".join(f"{line['median']:,.0f} ms" for line in found)
    return [Verdict(served_name, ">= 200 requests/s", got, min(served) >= 200),
            Verdict(added_name, "measured", added, True)]


TARGETS: tuple[Callable[[Results], list[Verdict]], ...] = (
    _sink_vs_copy, _sink_vs_dlt, _lowdb_latency, _lowdb_memory, _reporting, _questdb_backfill, _questdb_stream,
    _relay, _cutover, _wall,
)
"""Checks, in the order of the final table; a scenario's own targets are added here."""
