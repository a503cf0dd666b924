"""`python -m bench.readme`: rewrite the README's benchmark blocks from the newest results file.

A block is delimited by `<!-- bench:KIND:NAME -->` and `<!-- /bench -->` lines; what lies between
is generated, never typed:
- `bench:targets:all`   every target of the issue, met or missed
- `bench:run:all`       when the run was, how long it took, the machine's load
- `bench:lines:SECTION` the lines of one results section: median, min, max, load, others' CPU
- `bench:table:NAME`    a scenario table (scale curves with their exponents, plans)
`--check` exits 1 when the README differs (the unit test does the same).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import fit
from bench.results import Results, latest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- bench:(\w+):([\w -]+) -->\n)(.*?)(<!-- /bench -->)", re.S)


def _number(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if unit == "rows/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    if unit == "s" and abs(value) < 1:
        return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def targets(results: Results, _: str) -> str:
    """The verdict table."""
    return _markdown(["target", "want", "got", "status"],
                     [[v.target, v.want, v.got, f"**{v.status}**" if v.met is False else v.status]
                      for v in results.verdicts()])


def run(results: Results, _: str) -> str:
    """One sentence on the run the figures come from."""
    doc = results.document
    loads = [x for line in results.lines for x in line["load"]]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    state = "a complete run" if doc.get("complete") else "a partial run (not every scenario)"
    spent = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in doc.get("scenario_seconds", {}).items())
    return (f"From `bench/results/{doc['date']}.json`: {state} of `make bench` finished "
            f"{doc['finished_at']} on {doc['machine']['cpus']} CPUs, {doc['wall_seconds'] / 60:.1f} min"
            + (f" (minutes per scenario: {spent})" if spent else "") + "; "
            f"each figure is the median of {doc['repeats']} rounds after a discarded warm-up, methods interleaved "
            f"in rotated order; 1-minute load average during the samples {load}."
            + "".join(f" Sections {', '.join(c['sections'] + c['tables'])} are carried over from the run finished "
                      f"{c['finished_at']}." for c in doc.get("carried", []))
            + "".join(f" Not finished: {name} ({why})." for name, why in doc.get("failed", {}).items())
            + "\n")


NOT_MEASURED = "Not measured: the results file holds no `{}` figures yet (`make bench` writes them).\n"


def lines(results: Results, section: str) -> str:
    """A results section as a table; "not measured" when the results file has none of its lines."""
    rows = []
    for line in results.section(section):
        unit = line["unit"]
        extra = ", ".join(f"{k} {_number(v[1])}" for k, v in line["extra"].items())
        note = "; ".join(x for x in (line["note"], extra) if x)
        others = "-" if line["others_cpu"] < 0 else f"{line['others_cpu']:.0f}%"
        rows.append([line["scenario"], line["method"], f"{line['n']:,}", f"{_number(line['median'], unit)} {unit}",
                     f"{_number(line['min'], unit)} to {_number(line['max'], unit)}",
                     f"{line['load'][0]:.1f}-{line['load'][1]:.1f}", others, note])
    if not rows:
        return NOT_MEASURED.format(section)
    return _markdown(["scenario", "method", "n", "median", "min, max", "load", "others' CPU", "note"], rows)


def table(results: Results, name: str) -> str:
    """A scenario table, columns in first-seen order; "not measured" when absent."""
    rows = _refitted(results.table(name))
    if not rows:
        return NOT_MEASURED.format(name)
    # A scale curve's size column (the one its exponent row names) comes first, as its key.
    header = [k for k, v in rows[-1].items() if v == "exponent"]
    for row in rows:
        header += [k for k in row if k not in header]
    return _markdown(header, [[_number(row.get(k)) if k in row else "" for k in header] for row in rows])


def _refitted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A scale curve's exponent row fitted again from its points, as `bench.harness.fit` fits today.

    So a results file written before a fix to the fit (memory growths of 0 MiB once entered it as
    log(1e-9)) renders its curve's exponents right; the points themselves are the run's.
    """
    if not rows:
        return rows
    *points, last = rows
    x = next((k for k, v in last.items() if v == "exponent"), None)
    if x is None or not points:
        return rows
    return fit(points, x, [k for k in last if k != x])


KINDS: dict[str, Callable[[Results, str], str]] = {"targets": targets, "run": run, "lines": lines, "table": table}


def render(text: str, results: Results) -> str:
    """`text` with every bench block regenerated from `results`."""
    def block(match: re.Match[str]) -> str:
        opening, kind, name, _, closing = match.groups()
        if kind not in KINDS:
            raise ValueError(f"README: unknown bench block kind {kind!r}")
        return opening + KINDS[kind](results, name) + closing

    return BLOCK.sub(block, text)


def main() -> int:
    """Rewrite (or with --check, compare) the README against the newest results file."""
    parser = argparse.ArgumentParser(prog="python -m bench.readme")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    results = Results.load(args.results or latest())
    text = README.read_text()
    fresh = render(text, results)
    if args.check:
        return 0 if fresh == text else 1
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
