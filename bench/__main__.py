"""`python -m bench`: run every scenario against one PostgreSQL and print one table."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console
from rich.table import Table

from bench import lowdb_latency, questdb_backfill, reporting, sink
from bench.harness import Measure, server


def ratios(measures: list[Measure]) -> dict[tuple[str, str], str]:
    """Each line's rate against its scenario's reference (raw COPY for loads, first load otherwise)."""
    by = {(m.scenario, m.method): m for m in measures}
    raw = by.get(("sink: first load", "raw COPY"))
    first = by.get(("sink: first load", "sink"))
    out: dict[tuple[str, str], str] = {}
    for m in measures:
        notes = []
        if raw and m.scenario.startswith("sink:") and m is not raw:
            notes.append(f"{m.rate / raw.rate:.2f}x raw COPY")
        if first and m.method == "sink" and m is not first:
            notes.append(f"{m.rate / first.rate:.2f}x sink first load")
        em = by.get((m.scenario, "executemany upsert"))
        if em and m.method == "sink":
            notes.append(f"{m.rate / em.rate:.2f}x executemany")
        out[(m.scenario, m.method)] = ", ".join(notes)
    return out


def render(measures: list[Measure]) -> Table:
    """The bench table: rows/s and ratios measured in this run."""
    table = Table(title="syncd bench (all figures from this run)")
    for column in ("scenario", "method", "rows", "seconds", "rows/s", "ratio", "note"):
        table.add_column(column)
    notes = ratios(measures)
    for m in measures:
        table.add_row(m.scenario, m.method, f"{m.rows:,}", f"{m.seconds:.2f}", f"{m.rate:,.0f}",
                      notes.get((m.scenario, m.method), ""), m.note)
    return table


async def main(rows: int, only: list[str]) -> list[Table]:
    """Run the selected scenarios in order; a throughput table, then latency and reporting tables."""
    measures: list[Measure] = []
    tables: list[Table] = []
    with server() as dsn:
        if not only or "sink" in only:
            measures += await sink.run(dsn, rows)
        if not only or "questdb" in only:
            measures += await questdb_backfill.run(dsn, rows)
        if measures:
            tables.append(render(measures))
        if not only or "lowdb" in only:
            tables.append(lowdb_latency.table(await lowdb_latency.run(dsn)))
        if not only or "reporting" in only:
            tables.append(reporting.table(await reporting.run(dsn)))
    return tables


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    console = Console(width=180)
    for table in asyncio.run(main(args.rows, args.only)):
        console.print(table)
