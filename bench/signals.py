"""Signal-shaped rows for the sink scenarios, importable without syncd (the dlt runner uses it too).

Rows are `tp_capital_signals` rows in `COLUMNS` order: ts at second precision and not unique (as
upstream), `signal_key` the µs `ingested_at`, `row_hash` blake2b-128 of the record's canonical JSON.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

import orjson

TABLE = "signals.tp_capital_signals"
COLUMNS = (
    "ts", "signal_key", "channel", "signal_type", "asset", "buy_min", "buy_max", "target_1",
    "target_2", "target_final", "stop", "raw_message", "source", "ingested_at", "row_hash",
)
KEY = ("ts", "signal_key")
START = datetime(2025, 9, 1, tzinfo=UTC)
ASSETS = ("BEEFW655", "ABEVK122", "VALEW591", "PETRJ300", "BOVA11")


def signal_rows(n: int, *, version: int = 0, changed_every: int = 0) -> list[tuple[Any, ...]]:
    """`n` rows shaped like QuestDB's tp_capital_signals; every `changed_every`-th row altered."""
    rng = random.Random(42)
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        ts = START + timedelta(seconds=i // 3)
        ingested = ts + timedelta(microseconds=i % 3 + 1)
        price = round(rng.uniform(0.5, 9.5), 2)
        bumped = version if changed_every and i % changed_every == 0 else 0
        asset = ASSETS[i % 5]
        record = {
            "ts": ts.isoformat(), "channel": "@TPCapital_Oficial", "signal_type": "Swing Trade",
            "asset": asset, "buy_min": price, "buy_max": price + 0.1, "target_1": price + 0.5,
            "target_2": price + 1.0, "target_final": price + 2.0 + bumped, "stop": price - 0.5,
            "raw_message": f"COMPRA {asset} {price} ALVOS {price + 0.5}/{price + 1.0}",
            "source": "forwarder", "ingested_at": ingested.isoformat(),
        }
        digest = blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        rows.append((ts, ingested.isoformat(), record["channel"], record["signal_type"], asset,
                     price, price + 0.1, price + 0.5, price + 1.0, price + 2.0 + bumped, price - 0.5,
                     record["raw_message"], "forwarder", ingested, digest))
    return rows


def scenario_rows(
    scenario: str, n: int, base: Sequence[tuple[Any, ...]] | None = None
) -> tuple[Sequence[tuple[Any, ...]] | None, Sequence[tuple[Any, ...]]]:
    """(rows loaded beforehand, untimed, or None; rows the timed run applies) for a sink scenario.

    `base`: `signal_rows(m)` made once for some m >= n, sliced (the generator is deterministic, so
    its first n rows are `signal_rows(n)`).
    """
    base = signal_rows(n) if base is None else base[:n]
    if scenario == "first load":
        return None, base
    if scenario == "unchanged re-apply":
        return base, base
    if scenario == "10% changed":
        return base, signal_rows(n, version=1, changed_every=10)
    raise ValueError(f"unknown sink scenario {scenario!r}")
