"""The results file: a run of some scenarios merges into the day's file instead of replacing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results import Results


def _doc(sections: dict[str, float], tables: dict[str, Any]) -> dict[str, Any]:
    lines = [{"section": s, "scenario": "x", "method": "m", "median": v} for s, v in sections.items()]
    return {"date": "2026-12-01", "complete": True, "lines": lines, "tables": tables}


def test_an_only_run_keeps_the_other_sections_and_replaces_its_own(tmp_path: Path) -> None:
    """sink and lowdb from a full run survive a questdb-only run; questdb's old line is replaced."""
    Results(_doc({"sink": 1.0, "lowdb": 2.0, "questdb": 3.0}, {"sink scale": [1], "q": [1]})).save(tmp_path)
    path = Results(_doc({"questdb": 4.0}, {"q": [2]})).save(tmp_path, merge=True)
    merged = Results.load(path)
    assert {(line["section"], line["median"]) for line in merged.lines} == {("sink", 1.0), ("lowdb", 2.0),
                                                                           ("questdb", 4.0)}
    assert merged.document["tables"] == {"sink scale": [1], "q": [2]}
    assert merged.document["complete"] is False


def test_a_full_run_replaces_the_days_file(tmp_path: Path) -> None:
    """Without merge the file is the run's own."""
    Results(_doc({"sink": 1.0}, {})).save(tmp_path)
    path = Results(_doc({"questdb": 4.0}, {})).save(tmp_path)
    assert [line["section"] for line in Results.load(path).lines] == ["questdb"]
