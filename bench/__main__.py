"""`python -m bench`: every scenario against one PostgreSQL, the results file, one table of targets.

Each scenario is `async def run(bench: Bench) -> None` (see bench/harness.py). The results go to
`bench/results/<UTC date>.json` after every scenario (a run cut short keeps what it measured);
`python -m bench.readme` then renders the README's figures from that file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench import cutover_handover, lowdb_latency, lowdb_scale, questdb_backfill, relay, reporting, sink
from bench.harness import REPEATS, Bench, server
from bench.results import Results

Scenario = Callable[[Bench], Awaitable[None]]


SCENARIOS: dict[str, Scenario] = {
    "sink": sink.run,
    "reporting": reporting.run,
    "lowdb": lowdb_latency.run,
    "lowdb-scale": lowdb_scale.run,
    "questdb": questdb_backfill.run,
    "cutover": cutover_handover.run,
    "relay": relay.run,
}


def _document(bench: Bench, started: float, date: str, complete: bool, failed: dict[str, str],
              durations: dict[str, float]) -> dict[str, Any]:
    return {
        "date": date,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "load_at_end": os.getloadavg()},
        "repeats": bench.repeats,
        "quick": bench.quick,
        "complete": complete and not failed,
        "failed": failed,
        "wall_seconds": round(time.monotonic() - started, 1),
        "scenario_seconds": durations,
        "lines": [line.as_json() for line in bench.lines],
        "tables": bench.tables,
    }


async def main(only: list[str], quick: bool, save: bool) -> Results:
    """Run the selected scenarios in order, saving the results after each."""
    started = time.monotonic()
    # The file is named by the day the run began: one that crosses midnight UTC must not leave its
    # first scenarios in (and overwrite) the previous day's file.
    date = datetime.now(UTC).date().isoformat()
    with server() as dsn:
        # --quick: one round after the warm-up, at small sizes: it checks that the scenarios run.
        bench = Bench(dsn, quick=quick, repeats=1 if quick else REPEATS)
        await bench.find_server()
        failed: dict[str, str] = {}
        durations: dict[str, float] = {}
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            print(f"== {name}", flush=True)
            begun = time.monotonic()
            try:
                await scenario(bench)
            except Exception as exc:  # one broken scenario must not void the others' figures
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"!! {name} failed: {failed[name]}", flush=True)
            durations[name] = round(time.monotonic() - begun, 1)
            print(f"== {name}: {durations[name] / 60:.1f} min", flush=True)
            results = Results(_document(bench, started, date, False, failed, durations))
            if save and not quick:
                results.save(merge=bool(only))
    results = Results(_document(bench, started, date, not only and not quick, failed, durations))
    if save and not quick:
        print(f"results: {results.save(merge=bool(only))}")
    return results


def render(results: Results) -> Table:
    """The final table: every target, met or missed, from this run."""
    doc = results.document
    spent = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in doc.get("scenario_seconds", {}).items())
    load = doc["machine"]["load_at_end"][0]
    title = (f"syncd bench targets ({doc['repeats']} rounds after a warm-up, medians; "
             f"run took {doc['wall_seconds'] / 60:.1f} min: {spent}; load at end {load:.1f})")
    table = Table(title=title)
    for column in ("target", "want", "got", "status"):
        table.add_column(column)
    for v in results.verdicts():
        style = "green" if v.met else "red" if v.met is False else "yellow"
        table.add_row(v.target, v.want, v.got, f"[{style}]{v.status}[/{style}]")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", default=[], choices=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small sizes, nothing saved: checks the scenarios run")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.only, args.quick, not args.no_save))
    Console(width=160).print(render(outcome))
