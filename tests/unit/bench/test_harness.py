"""Scale-curve exponents: memory below the noise floor is not fitted, time always is."""

from __future__ import annotations

import math

from bench.harness import fit
from bench.readme import lines, table
from bench.results import Results


def test_a_memory_exponent_is_fitted_on_the_sizes_above_the_floor_only() -> None:
    """0 MiB at the small sizes would make log(0) the slope; a growth that never leaves the floor is flat."""
    points = [{"records": 1_000, "s": 0.1, "rss_growth_mib": 0.0, "peak_mib": 0.2},
              {"records": 10_000, "s": 1.0, "rss_growth_mib": 0.0, "peak_mib": 0.4},
              {"records": 100_000, "s": 10.0, "rss_growth_mib": 161.4, "peak_mib": 0.3},
              {"records": 500_000, "s": 50.0, "rss_growth_mib": 924.8, "peak_mib": 0.1}]
    exponents = fit(points, "records", ("s", "rss_growth_mib", "peak_mib"))[-1]
    assert exponents["records"] == "exponent"
    assert exponents["s"] == 1.0
    slope = math.log(924.8 / 161.4) / math.log(5)
    assert exponents["rss_growth_mib"] == f"{slope:.2f} (2 largest sizes)"
    assert exponents["peak_mib"] == "flat (< 1 MiB)"


def test_a_section_or_table_absent_from_the_results_renders_as_not_measured() -> None:
    """A scenario that did not run leaves its README block saying so instead of failing the render."""
    empty = Results({"lines": [], "tables": {}})
    assert lines(empty, "cutover").startswith("Not measured")
    assert table(empty, "sink scale").startswith("Not measured")


def test_one_size_above_the_floor_gives_no_exponent() -> None:
    """A single point cannot make a slope: the cell says so rather than 'flat'."""
    points = [{"rows": 10_000, "rss_growth_mib": 0.0}, {"rows": 1_000_000, "rss_growth_mib": 11.0}]
    assert fit(points, "rows", ("rss_growth_mib",))[-1]["rss_growth_mib"] == "- (one size at 1 MiB or more)"


def test_a_stored_exponent_row_is_fitted_again_when_rendered() -> None:
    """A results file from before the floor renders its curve with today's fit, its points unchanged."""
    stored = [{"rows": 10_000, "seconds": 1.0, "rss_growth_mib": 0.0},
              {"rows": 100_000, "seconds": 10.0, "rss_growth_mib": 0.0},
              {"rows": "exponent", "seconds": 1.0, "rss_growth_mib": 5.21}]
    out = table(Results({"tables": {"curve": stored}}), "curve")
    assert "| exponent | 1.00 | flat (< 1 MiB) |" in out
    assert "5.21" not in out
