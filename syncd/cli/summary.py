"""pgloader's end-of-load table, for a `syncd backfill` and a stream's initial load alike.

One row per load (a backfilled QuestDB table, a stream's catch-up) with what it read, what
PostgreSQL did, the records it held in quarantine and its seconds; under it one row per PostgreSQL
table it wrote, by bare name (the schema is in the JSON line). Narrow enough for 80 columns: the
`unchanged` counts are in the JSON line only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from syncd.cli.console import Column, grid

COLUMNS = (
    Column("load / table", keep=True),
    *(Column(name, keep=True, right=True) for name in ("read", "inserted", "updated", "deleted", "held", "secs")),
)
OPS = ("inserted", "updated", "deleted")


def summary_table(title: str, loads: Mapping[str, Mapping[str, Any]]) -> Table:
    """The table of `loads` (name → a LoadStats JSON summary), titled `title`."""
    return grid(title, COLUMNS, [row for name, summary in loads.items() for row in _rows(name, summary)])


def _rows(name: str, summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    tables: Mapping[str, Mapping[str, int]] = summary["tables"]
    totals = [sum(done[op] for done in tables.values()) for op in OPS]
    held, seconds = summary["quarantined"], summary["seconds"]
    rows = [(name, str(summary["rows"]), *map(str, totals), str(held), f"{seconds:.1f}")]
    for table, done in tables.items():
        rows.append(("  " + table.rpartition(".")[2], "", *(str(done[op]) for op in OPS), "", ""))
    return rows


def summary_title(what: str, summary: Mapping[str, Any]) -> str:
    """`{what}: N row(s) read in S s` (and `, resumed` for a backfill that resumed)."""
    resumed = ", resumed" if summary.get("resumed") else ""
    return f"{what}: {summary['rows']} row(s) read in {summary['seconds']:.1f} s{resumed}"
