"""dlt merge of the sink scenarios' rows, run by dlt's own venv (`.tools/bench-venv`, `make bench`).

`python bench/dlt_merge.py DSN` is a worker: each line on stdin, `{"scenario": S, "rows": N, "kind":
"arrow"|"dict"}`, drops its dataset, loads the scenario's base rows untimed when it has some, then
times one `pipeline.run` of the scenario's rows with `write_disposition="merge"` on the primary key
(ts, signal_key) and answers one line `{"seconds": s}`. One process serves every run, so importing
dlt and generating the rows are paid once, not per sample. dlt creates its own (unpartitioned)
table with the primary key as a constraint (`create_indexes`). Rows come from bench/signals.py, the
generator the sink scenarios use.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.parse
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


def _data(rows: list[tuple[Any, ...]], kind: str) -> Any:
    if kind == "arrow":
        columns = {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}
        # dlt loads Arrow into postgres as CSV, which takes bytes only as their \\x hex text.
        columns["row_hash"] = [b"\\x" + h.hex().encode() for h in columns["row_hash"]]
        return pa.table(columns)
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def _run(pipeline: Any, rows: list[tuple[Any, ...]], kind: str) -> float:
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


def measure(dsn: str, before: list[tuple[Any, ...]] | None, rows: list[tuple[Any, ...]], kind: str) -> float:
    """Reset the dataset, prepare the scenario untimed, return the timed run's seconds."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {DATASET} CASCADE; DROP SCHEMA IF EXISTS {DATASET}_staging CASCADE")
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as home:
        pipeline = dlt.pipeline(pipeline_name="syncd_bench", pipelines_dir=home, dataset_name=DATASET,
                                destination=dlt.destinations.postgres(credentials=dsn, create_indexes=True),
                                progress=None)
        if before is not None:
            _run(pipeline, before, kind)
        return _run(pipeline, rows, kind)


def main(dsn: str) -> None:
    """Answer one `{"seconds": s}` line per request line until stdin closes."""
    dsn = _with_password(dsn)
    made: dict[tuple[str, int], tuple[list[tuple[Any, ...]] | None, list[tuple[Any, ...]]]] = {}
    for request in sys.stdin:
        ask = orjson.loads(request)
        key = (ask["scenario"], ask["rows"])
        if key not in made:
            made[key] = scenario_rows(*key)
        seconds = measure(dsn, *made[key], ask["kind"])
        print(orjson.dumps({"seconds": seconds}).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
