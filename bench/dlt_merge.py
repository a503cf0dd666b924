"""dlt merge of the sink scenarios' rows, run by dlt's own venv (`.tools/bench-venv`, `make bench`).

`python bench/dlt_merge.py DSN` is a worker: for each line on stdin, `{"scenario": S, "rows": N,
"kind": "arrow"|"dict"}`, it drops its dataset and loads the scenario's base rows untimed when it
has some (an unchanged re-apply leaves the dataset as it found it, so the next such request keeps
it), then times one `pipeline.run` of the scenario's rows with `write_disposition="merge"` on the
primary key (ts, signal_key) and answers one line `{"seconds": s}`. One process serves every run,
so importing dlt and generating the rows are paid once, not per sample. dlt creates its own
(unpartitioned) table with the primary key as a constraint (`create_indexes`). Rows come from
bench/signals.py, the generator the sink scenarios use.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dlt
import orjson
import psycopg2
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.signals import COLUMNS, KEY, scenario_rows

DATASET = "dlt_bench"
HINTS = {"signal_key": {"data_type": "text"}}
"""signal_key is the µs ingested_at as text; dlt would infer a timestamp from its ISO form."""
STRATEGY = "delete-insert"
"""dlt's default merge strategy for postgres (a staging dataset, delete matching keys, insert)."""


def _data(rows: Sequence[tuple[Any, ...]], kind: str) -> Any:
    if kind == "arrow":
        columns = {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}
        # dlt loads Arrow into postgres as CSV, which takes bytes only as their \\x hex text.
        columns["row_hash"] = [b"\\x" + h.hex().encode() for h in columns["row_hash"]]
        return pa.table(columns)
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def _run(pipeline: Any, rows: Sequence[tuple[Any, ...]], kind: str) -> float:
    data = _data(rows, kind)
    resource = dlt.resource(data, name="tp_capital_signals", primary_key=list(KEY), columns=HINTS,
                            write_disposition={"disposition": "merge", "strategy": STRATEGY})
    started = time.perf_counter()
    pipeline.run(resource)
    return time.perf_counter() - started


def _with_password(dsn: str) -> str:
    # dlt insists on a password; the bench's cluster trusts loopback, so any will do.
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None and parts.username:
        parts = parts._replace(netloc=f"{parts.username}:bench@{parts.hostname}:{parts.port}")
    return urllib.parse.urlunsplit(parts)


class Worker:
    """Runs the requests in one process, keeping the dataset when a run leaves it as it found it."""

    def __init__(self, dsn: str, home: str) -> None:
        self._dsn, self._home = dsn, home
        self._rows: dict[tuple[str, int], tuple[Sequence[tuple[Any, ...]] | None, Sequence[tuple[Any, ...]]]] = {}
        self._pipeline: Any = None
        self._holds: tuple[str, int, str] | None = None
        """The request whose starting state the dataset is in (a re-apply of its base rows keeps it)."""

    def seconds(self, scenario: str, n: int, kind: str) -> float:
        """Prepare the scenario untimed (unless the dataset is already in its state), time its run."""
        if (scenario, n) not in self._rows:
            self._rows[scenario, n] = scenario_rows(scenario, n)
        before, rows = self._rows[scenario, n]
        if self._holds != (scenario, n, kind):
            self._pipeline = self._reset(kind)
            if before is not None:
                _run(self._pipeline, before, kind)
        seconds = _run(self._pipeline, rows, kind)
        self._holds = (scenario, n, kind) if rows is before else None
        return seconds

    def _reset(self, kind: str) -> Any:
        with psycopg2.connect(self._dsn) as conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {DATASET} CASCADE; DROP SCHEMA IF EXISTS {DATASET}_staging CASCADE")
        return dlt.pipeline(pipeline_name=f"syncd_bench_{kind}", pipelines_dir=tempfile.mkdtemp(dir=self._home),
                            dataset_name=DATASET, progress=None,
                            destination=dlt.destinations.postgres(credentials=self._dsn, create_indexes=True))


def main(dsn: str) -> None:
    """Answer one `{"seconds": s}` line per request line until stdin closes."""
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as home:
        worker = Worker(_with_password(dsn), home)
        for request in sys.stdin:
            ask = orjson.loads(request)
            seconds = worker.seconds(ask["scenario"], ask["rows"], ask["kind"])
            print(orjson.dumps({"seconds": seconds}).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
