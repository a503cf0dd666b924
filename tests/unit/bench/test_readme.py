"""The README's benchmark figures are exactly what the newest results file renders, and the
targets table judges a results document the way the issue states its goals."""

from __future__ import annotations

from typing import Any

from bench.readme import BLOCK, README, render
from bench.results import Results, latest


def test_readme_blocks_equal_the_newest_results_file() -> None:
    """Re-rendering changes nothing: no figure in a generated block was typed or left stale."""
    text = README.read_text()
    kinds = {m.group(2) for m in BLOCK.finditer(text)}
    assert {"run", "targets", "lines", "table"} <= kinds
    assert render(text, Results.load(latest())) == text, "run `python -m bench.readme` (or `make bench`)"


def line(scenario: str, method: str, median: float, section: str = "sink", **extra: float) -> dict[str, Any]:
    """A results line with one sample."""
    return {"section": section, "scenario": scenario, "method": method, "unit": "rows/s", "n": 1,
            "samples": [median], "min": median, "median": median, "max": median, "load": [1.0, 1.0],
            "others_cpu": 0.0, "extra": {k: [v, v, v] for k, v in extra.items()}, "note": ""}


def test_targets_are_judged_on_medians_and_missing_ones_say_so() -> None:
    """0.9x raw COPY and 4x dlt's best (Arrow or dict, whichever is faster) per scenario."""
    lines = [line("first load", "raw COPY", 100.0), line("first load", "sink", 95.0),
             line("first load", "dlt merge (Arrow)", 20.0), line("first load", "dlt merge (dict rows)", 30.0),
             line("10% changed", "sink", 100.0), line("10% changed", "dlt merge (Arrow)", 20.0)]
    verdicts = {v.target: v for v in Results({"lines": lines}).verdicts()}
    assert verdicts["sink first load vs raw COPY"].status == "met"
    assert (verdicts["sink vs dlt's best: first load"].got, verdicts["sink vs dlt's best: first load"].met) == (
        "3.2x (raw COPY 3.3x)", False)
    assert verdicts["sink vs dlt's best: 10% changed"].met is True
    assert verdicts["sink vs dlt's best: unchanged re-apply"].status == "not measured"
    assert verdicts["make bench wall time (every scenario)"].status == "not measured"


def test_a_block_is_regenerated_between_its_markers_only() -> None:
    """Text outside the markers is kept; inside, the results replace whatever was there."""
    doc = {"lines": [line("first load", "sink", 1234.0)], "tables": {"t": [{"rows": 10, "seconds": 0.5}]}}
    text = "before\n<!-- bench:lines:sink -->\nstale 999\n<!-- /bench -->\nmiddle\n" \
           "<!-- bench:table:t -->\n<!-- /bench -->\nafter\n"
    out = render(text, Results(doc))
    assert "stale" not in out
    assert out.startswith("before\n<!-- bench:lines:sink -->\n| scenario |")
    assert "| first load | sink | 1 | 1,234 rows/s |" in out
    assert "| rows | seconds |\n|---|---|\n| 10 | 0.50 |\n<!-- /bench -->\nafter\n" in out


def test_a_section_or_table_absent_from_the_results_renders_not_measured() -> None:
    """A scenario the run did not reach says so instead of an empty table (or a crash)."""
    text = "<!-- bench:lines:cutover -->\n<!-- /bench -->\n<!-- bench:table:curve -->\n<!-- /bench -->\n"
    out = render(text, Results({"lines": [line("first load", "sink", 1.0)]}))
    assert "Not measured: the results file holds no `cutover` figures yet" in out
    assert "no `curve` figures yet" in out
    assert "| scenario |" not in out


def test_the_cutover_targets_judge_both_storage_clients() -> None:
    """The drill's load is judged served when both clients' median rate reaches 200/s; one missing: not measured."""
    def cutover(method: str, served: float) -> dict[str, Any]:
        return line("handover under load", method, 40.0, section="cutover", served_per_s=served)

    both = {v.target: v for v in Results({"lines": [cutover("node-postgres client", 259.0),
                                                      cutover("Prisma 7 client", 190.0)]}).verdicts()}
    served = both["cutover drill load served (both storage clients)"]
    assert (served.got, served.met) == ("259/s, 190/s", False)
    assert both["p99 a handover adds"].got == "40 ms, 40 ms"
    one = {v.target: v for v in Results({"lines": [cutover("node-postgres client", 259.0)]}).verdicts()}
    assert one["cutover drill load served (both storage clients)"].status == "not measured"
