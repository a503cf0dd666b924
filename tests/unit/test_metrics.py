"""Metrics of a stopped stream disappear, so alerts never fire on a stream that is not running."""

from __future__ import annotations

import platform

from prometheus_client import generate_latest

from syncd import metrics
from syncd.version import VERSION


def test_forget_stream_drops_every_stream_gauge_and_only_that_stream() -> None:
    for gauge in metrics.STREAM_GAUGES:
        gauge.labels("retired-file").set(0)
        gauge.labels("running-file").set(1)
    metrics.forget_stream("retired-file")
    metrics.forget_stream("never-started")  # harmless
    exposition = generate_latest(metrics.REGISTRY).decode()
    assert 'stream="retired-file"' not in exposition
    assert all(f'{g._name}{{stream="running-file"}}' in exposition for g in metrics.STREAM_GAUGES)


def test_build_info_names_the_version_and_python() -> None:
    exposition = generate_latest(metrics.REGISTRY).decode()
    assert (
        f'syncd_build_info{{implementation="{platform.python_implementation()}",'
        f'python="{platform.python_version()}",version="{VERSION}"}} 1.0'
    ) in exposition
