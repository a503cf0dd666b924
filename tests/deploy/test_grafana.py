"""The Grafana dashboard: loads, every panel queries something, and only metrics syncd exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import Metric

from syncd import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "syncd-dashboard.json"
PROMTOOL = ROOT / ".tools" / "usr" / "bin" / "promtool"
METRIC_NAME = re.compile(r"\bsyncd_[a-zA-Z0-9_]+")
# Suffixes prometheus_client appends to a family's name in the exposition, by metric type.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
# Grafana macros and variables, replaced by plain PromQL so promtool can parse the expressions.
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$stream": ".*"}


def dashboard() -> dict[str, Any]:
    """The dashboard JSON as Grafana would import it."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def exprs() -> list[str]:
    """Every PromQL expression of every panel target."""
    return [target["expr"] for panel in panels() for target in panel.get("targets", [])]


def family_sample_names(family: Metric) -> set[str]:
    """The sample names a metric family shows in /metrics (`_total`, `_bucket`, … for its type)."""
    return {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}


def exported_names() -> set[str]:
    """Every sample name syncd's registry can export, from the families (samples may not exist yet)."""
    return {name for family in metrics.REGISTRY.collect() for name in family_sample_names(family)}


def referenced_names(texts: list[str]) -> set[str]:
    """The syncd_* metric names used in PromQL `texts`."""
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def test_dashboard_loads_with_identity_and_schema() -> None:
    """uid, title and a current schemaVersion: the fields Grafana's provisioning needs."""
    board = dashboard()
    assert board["uid"] == "syncd-overview"
    assert board["title"]
    assert board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None, "a fixed id clashes on import into another Grafana"


def test_template_variables_datasource_and_stream() -> None:
    """`datasource` picks a Prometheus; `stream` lists the streams syncd reports lag for."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    stream = variables["stream"]
    assert stream["type"] == "query"
    assert stream["definition"] == "label_values(syncd_event_lag_seconds, stream)"
    assert stream["query"] == stream["definition"]
    assert stream["datasource"]["uid"] == "${datasource}"
    assert stream["multi"]
    assert stream["includeAll"]


def test_every_panel_has_targets_on_the_selected_datasource() -> None:
    """No empty panel, and every query goes to the chosen data source, not a hard-coded one."""
    for panel in panels():
        if panel["type"] == "row":
            continue  # rows only group panels
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panel_ids_and_ref_ids_are_unique() -> None:
    """Grafana keys panel state by id; duplicate refIds within a panel drop queries."""
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), ids
    for panel in panels():
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_metric_in_the_dashboard_is_exported_by_syncd() -> None:
    """A typo or a renamed metric would leave a panel silently empty."""
    names = referenced_names(exprs())
    assert names, "no syncd metric found in the panel expressions"
    assert names - exported_names() == set()


def test_the_dashboard_covers_what_operators_watch() -> None:
    """Both lag clocks (event lag and apply-latency quantiles), throughput and every alerting signal."""
    names = referenced_names(exprs())
    expected = {
        "syncd_event_lag_seconds",
        "syncd_apply_latency_seconds_bucket",
        "syncd_rows_applied_total",
        "syncd_quarantine_records",
        "syncd_leader",
        "syncd_source_up",
        "syncd_verify_mismatch_rows",
        "syncd_mass_delete_held",
        "syncd_seconds_since_last_success",
    }
    assert expected - names == set()
    assert any("histogram_quantile" in e and "syncd_apply_latency_seconds_bucket" in e for e in exprs())


def test_exported_names_follow_the_exposition_suffixes() -> None:
    """The name set used above: counters end in _total, histograms export _bucket/_count/_sum."""
    names = exported_names()
    assert {"syncd_rows_applied_total", "syncd_apply_latency_seconds_bucket", "syncd_leader"} <= names
    assert "syncd_rows_applied" not in names
    assert "syncd_apply_latency_seconds" not in names


@pytest.mark.skipif(not PROMTOOL.is_file(), reason=f"promtool not found at {PROMTOOL}: run `make tools`")
def test_every_panel_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression (as a recording rule), Grafana macros replaced by values."""
    rules = []
    for i, expr in enumerate(exprs()):
        for macro, value in GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:expr{i}", "expr": expr})
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_metric_would_be_caught() -> None:
    """The name check can fail: a typo or a family name without its suffix is not exported."""
    names = referenced_names(["rate(syncd_rows_applied[5m])", "syncd_event_lag_second > 1"])
    assert names == {"syncd_rows_applied", "syncd_event_lag_second"}
    assert names & exported_names() == set()
