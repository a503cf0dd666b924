"""`syncd status`: the /status document as a table that stays readable on an 80-column terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from syncd.cli.main import loads_table, status_table

DOWN = "source questdb unavailable: ClientConnectorError: Cannot connect to host 127.0.0.1:9000"
DOCUMENT = {
    "version": "0.1.0",
    "instance": "syncd-0",
    "role": "leader",
    "leader": True,
    "epoch": 7,
    "members": ["syncd-0"],
    "owners": {"workspace": {"holder": "syncd-0", "epoch": 7}, "questdb:tp_capital_signals": {"holder": "syncd-0",
                                                                                             "epoch": 3}},
    "streams": {
        "workspace": {"mode": "mirror", "source_up": True, "caught_up": True, "event_lag_seconds": 0.0,
                      "rows_applied": {"insert": 1204, "update": 56, "delete": 3}, "quarantined": 0,
                      "restarts": 0, "last_error": None},
        "questdb:tp_capital_signals": {"mode": "pg-primary", "source_up": False, "caught_up": False,
                                       "event_lag_seconds": 12.5,
                                       "catch_up": {"read": 42000, "applied": 41000, "total": 100000,
                                                    "percent": 42.0, "eta_seconds": 12.3},
                                       "rows_applied": {"insert": 100000, "update": 0, "delete": 0},
                                       "quarantined": 2, "restarts": 3, "last_error": DOWN},
    },
}


def render(width: int) -> list[str]:
    """The table as the terminal shows it at `width` columns."""
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(status_table(DOCUMENT))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_status_table_fits_80_columns_with_source_up_and_every_word_of_the_error() -> None:
    """Source up and caught up (with a first load's percent and ETA) are columns, names are never cut;
    restarts and the error follow the table."""
    lines = render(80)
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == "syncd 0.1.0 syncd-0 (leader; members: syncd-0)"
    header = " ".join(line for line in lines[1:] if line and not line.lstrip().startswith(("─", "questdb", "work")))
    assert re.search(r"\bup\b", header)
    down = next(line for line in lines if line.lstrip().startswith("questdb:"))
    assert re.search(r"^ questdb:tp_capital_signals\s+syncd-0@3\s+pg-primary\s+NO\s+42% 12s\s+12\s", down)
    up = next(line for line in lines if line.lstrip().startswith("workspace"))
    assert re.search(r"^ workspace\s+syncd-0@7\s+mirror\s+yes\s+yes\s+0\.000\s", up)
    trouble = " ".join(lines[lines.index(up) + 1 :]).split()
    assert " ".join(trouble) == f"questdb:tp_capital_signals: 3 restarts; last error: {DOWN}"
    assert not any(line.startswith("workspace:") for line in lines), "a healthy stream gets no line of its own"


SUMMARY = {"table": "workspace", "rows": 3005, "total": 3005, "quarantined": 1, "seconds": 2.25, "resumed": False,
           "tables": {"workspace.workspace_categories": {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 4},
                      "workspace.workspace_items": {"inserted": 5, "updated": 10, "deleted": 2, "unchanged": 2990}}}


def test_loads_table_per_stream_and_table_in_80_columns() -> None:
    """`syncd status --loads`: a row per finished load, one per table under it, then loads running."""
    document = {"streams": {"workspace": {**DOCUMENT["streams"]["workspace"], "initial_load": SUMMARY},  # type: ignore[dict-item]
                            "questdb:tp_capital_signals": DOCUMENT["streams"]["questdb:tp_capital_signals"]}}
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(loads_table(document))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0] == "initial loads: 1 done"
    assert max(map(len, lines)) <= 80
    assert lines[2].split() == ["load", "/", "table", "read", "inserted", "updated", "deleted", "held", "secs"]
    rows = [line.split() for line in lines[4:7]]
    assert rows == [["workspace", "3005", "5", "10", "2", "1", "2.2"],
                    ["workspace_categories", "0", "0", "0"],
                    ["workspace_items", "5", "10", "2"]]
    start = next(i for i, line in enumerate(lines) if line.startswith("questdb:tp_capital_signals: initial load"))
    under_way = " ".join(lines[start:])
    assert under_way == (
        "questdb:tp_capital_signals: initial load under way, 42% 12s: 42000 of 100000 read, 41000 applied")
