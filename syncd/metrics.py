"""Every Prometheus metric syncd exports, defined once, on a registry of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from syncd.version import build_info

REGISTRY = CollectorRegistry(auto_describe=True)

_BUILD = build_info()
BUILD_INFO = Gauge(
    "syncd_build_info",
    "Always 1; the labels say which syncd build and Python this process runs.",
    list(_BUILD),
    registry=REGISTRY,
)
BUILD_INFO.labels(**_BUILD).set(1)

EVENT_LAG = Gauge(
    "syncd_event_lag_seconds",
    "Source time of the newest applied row versus source now, per stream (never negative).",
    ["stream"],
    registry=REGISTRY,
)
APPLY_LATENCY = Histogram(
    "syncd_apply_latency_seconds",
    "From file write or poll to PostgreSQL commit.",
    ["stream"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the last successful cycle per stream (basis of seconds_since_last_success).",
    ["stream"],
    registry=REGISTRY,
)
SECONDS_SINCE_LAST_SUCCESS = Gauge(
    "syncd_seconds_since_last_success",
    "Seconds since the stream last completed a cycle (poll or file version) without error.",
    ["stream"],
    registry=REGISTRY,
)
ROWS_APPLIED = Counter(
    "syncd_rows_applied_total",
    "Rows changed in PostgreSQL, by operation.",
    ["stream", "table", "op"],
    registry=REGISTRY,
)
BATCHES = Counter(
    "syncd_batches_total",
    "Batches by outcome (committed, retried, rejected, fenced).",
    ["stream", "outcome"],
    registry=REGISTRY,
)
QUARANTINE_RECORDS = Gauge(
    "syncd_quarantine_records",
    "Records held in syncd.quarantine, per stream.",
    ["stream"],
    registry=REGISTRY,
)
SCHEMA_DRIFT = Counter(
    "syncd_schema_drift_total",
    "Source fields the table spec does not know (kept in `extra`).",
    ["table", "field"],
    registry=REGISTRY,
)
LATE_ROWS = Counter(
    "syncd_late_rows_total",
    "Rows found behind the watermark by the lag-window rescan.",
    ["stream"],
    registry=REGISTRY,
)
MASS_DELETE_HELD = Gauge(
    "syncd_mass_delete_held",
    "1 while a mass delete waits for confirmation, per stream.",
    ["stream"],
    registry=REGISTRY,
)
MASS_DELETES_HELD = Counter(
    "syncd_mass_deletes_held_total",
    "Mass deletes the guard held for a second read, per stream (most are confirmed within milliseconds).",
    ["stream"],
    registry=REGISTRY,
)
VERIFY_MISMATCH_ROWS = Gauge(
    "syncd_verify_mismatch_rows",
    "Rows that differ between source and PostgreSQL at the last verify, per table.",
    ["table"],
    registry=REGISTRY,
)
CLOCK_SKEW = Gauge(
    "syncd_clock_skew_seconds",
    "Source clock minus local clock, per source.",
    ["source"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "syncd_leader",
    "1 when this instance holds at least one stream lease (it leads those streams).",
    registry=REGISTRY,
)
STREAMS_OWNED = Gauge(
    "syncd_streams_owned",
    "Stream leases this instance holds (the streams it runs).",
    registry=REGISTRY,
)
STREAMS_CONFIGURED = Gauge(
    "syncd_streams_configured",
    "Streams this instance's config names (each one lease shared by all instances).",
    registry=REGISTRY,
)
SNAPSHOT_ROWS_READ = Gauge(
    "syncd_snapshot_rows_read",
    "Records of the initial snapshot/backlog read so far, per stream (kept once caught up).",
    ["stream"],
    registry=REGISTRY,
)
SNAPSHOT_ROWS_APPLIED = Gauge(
    "syncd_snapshot_rows_applied",
    "Rows the initial snapshot/backlog changed in PostgreSQL so far, per stream.",
    ["stream"],
    registry=REGISTRY,
)
SNAPSHOT_ROWS_EXPECTED = Gauge(
    "syncd_snapshot_rows_expected",
    "Records the initial snapshot/backlog holds, per stream (absent while unknown).",
    ["stream"],
    registry=REGISTRY,
)
SNAPSHOT_ROWS_STAGED = Gauge(
    "syncd_snapshot_rows_staged",
    "Rows a first load done in one transaction has handed to its COPY so far, per stream (LowDB).",
    ["stream"],
    registry=REGISTRY,
)
SNAPSHOT_PROGRESS = Gauge(
    "syncd_snapshot_progress_ratio",
    "Share of the initial snapshot/backlog done, 0 to 1, per stream (absent while its total is unknown).",
    ["stream"],
    registry=REGISTRY,
)
SNAPSHOT_ETA = Gauge(
    "syncd_snapshot_eta_seconds",
    "Seconds the initial snapshot/backlog still needs at its rate so far, per stream (0 once caught up).",
    ["stream"],
    registry=REGISTRY,
)

SOURCE_UP = Gauge(
    "syncd_source_up",
    "1 when the last read of the source succeeded.",
    ["stream"],
    registry=REGISTRY,
)
FOREIGN_WRITES = Counter(
    "syncd_foreign_writes_total",
    "Versions of a pg-primary LowDB file written by another writer than the reverse path (a stale "
    "LowDB-strategy process): held in quarantine, PostgreSQL's state restored.",
    ["stream"],
    registry=REGISTRY,
)
REVERSE_RECORDS = Counter(
    "syncd_reverse_records_total",
    "Records written back into a LowDB file by the reverse path (pg-primary).",
    ["stream"],
    registry=REGISTRY,
)
STREAM_RESTARTS = Counter(
    "syncd_stream_restarts_total",
    "Times the supervisor restarted a stream after a failure or a stall, per stream.",
    ["stream"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "syncd_retries_total",
    "Transient failures retried, by component.",
    ["component"],
    registry=REGISTRY,
)
RELAY_EVENTS = Counter(
    "syncd_relay_events_total",
    "Outbox changes (and snapshot rows) the Kafka relay published and the broker acknowledged, per table.",
    ["table", "op"],
    registry=REGISTRY,
)
RELAY_LAG = Gauge(
    "syncd_relay_lag_seconds",
    "Age of the oldest committed outbox change the Kafka relay has not yet had acknowledged (0 when none).",
    registry=REGISTRY,
)
RELAY_ACKED_TXID = Gauge(
    "syncd_relay_acked_txid",
    "The relay's acknowledged outbox position (transaction id watermark): rows below it are prunable.",
    registry=REGISTRY,
)

CUTOVER_CLIENTS = Gauge(
    "syncd_cutover_clients",
    "Cutover clients (Node services) connected to a LowDB file, by the mode each routes by.",
    ["file", "mode"],
    registry=REGISTRY,
)
CUTOVER_SHADOW_MISMATCHES = Gauge(
    "syncd_cutover_shadow_mismatches",
    "Shadow reads the connected clients found PostgreSQL disagreeing with, since they entered shadow.",
    ["file", "table"],
    registry=REGISTRY,
)
CUTOVER_HOLD_SECONDS_MAX = Gauge(
    "syncd_cutover_hold_seconds_max",
    "Longest time a connected client held a write during a handover.",
    ["file"],
    registry=REGISTRY,
)
CUTOVER_HOLDS_TIMED_OUT = Gauge(
    "syncd_cutover_holds_timed_out",
    "Writes the connected clients failed because a handover outlasted their hold bound.",
    ["file"],
    registry=REGISTRY,
)


STREAM_GAUGES = (EVENT_LAG, LAST_SUCCESS, SECONDS_SINCE_LAST_SUCCESS, QUARANTINE_RECORDS, MASS_DELETE_HELD, SOURCE_UP)
"""Gauges describing a running stream: meaningless once it stops (retired file, standby)."""


def forget_stream(stream: str) -> None:
    """Drop a stopped stream's gauges, so no alert fires on the last value of a stream not running."""
    for gauge in STREAM_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(stream)


def export_catch_up(stream: str, catch_up: Mapping[str, Any]) -> None:
    """Set the `syncd_snapshot_*` gauges from a stream's /status `catch_up` (unknown values left out)."""
    gauges = {
        "read": SNAPSHOT_ROWS_READ,
        "staged": SNAPSHOT_ROWS_STAGED,
        "applied": SNAPSHOT_ROWS_APPLIED,
        "total": SNAPSHOT_ROWS_EXPECTED,
        "eta_seconds": SNAPSHOT_ETA,
    }
    for key, gauge in gauges.items():
        if catch_up.get(key) is not None:
            gauge.labels(stream).set(catch_up[key])
    if catch_up.get("percent") is not None:
        SNAPSHOT_PROGRESS.labels(stream).set(catch_up["percent"] / 100.0)
