"""The Prometheus alert rules: promtool accepts them, their unit tests pass, every alert is tested."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_grafana import exported_names, referenced_names

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / ".tools" / "usr" / "bin" / "promtool"
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "syncd-alerts.yml"
RULE_TESTS = RULES_DIR / "syncd-alerts.test.yml"
RUNBOOK = ROOT / "README.md"

needs_promtool = pytest.mark.skipif(
    not PROMTOOL.is_file(), reason=f"promtool not found at {PROMTOOL}: run `make tools` to unpack it"
)


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args` in `cwd`; the result carries rc, stdout and stderr."""
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file, in file order."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_test_cases() -> list[dict[str, Any]]:
    """Every `alert_rule_test` entry of the promtool unit-test file."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


@needs_promtool
def test_promtool_check_rules_passes() -> None:
    """`promtool check rules` accepts the rules file (syntax, PromQL, templates)."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes: each alert fires and stays silent exactly where expected."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    """A copy with one unparsable expr fails the check, so the passing check above means something."""
    broken = tmp_path / "syncd-alerts.yml"
    text = RULES.read_text()
    good = "expr: syncd_event_lag_seconds > 60"
    assert good in text
    broken.write_text(text.replace(good, "expr: syncd_event_lag_seconds > > 60", 1))
    result = promtool("check", "rules", str(broken), cwd=tmp_path)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


@needs_promtool
def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """Raising the lag threshold breaks the firing case: the unit tests pin the rules' behaviour."""
    text = RULES.read_text()
    assert "syncd_event_lag_seconds > 60" in text
    (tmp_path / RULES.name).write_text(text.replace("syncd_event_lag_seconds > 60", "syncd_event_lag_seconds > 600"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "SyncdEventLagHigh" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    """Each alert appears in the unit tests at least once with exp_alerts and once without."""
    cases = rule_test_cases()
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - silent == set(), "alerts without a not-firing test case"
    # A test naming an alert that no longer exists would pass vacuously (nothing fires).
    assert (firing | silent) - names == set(), "test cases for alerts the rules file does not define"


def test_every_alert_is_labelled_annotated_and_has_a_runbook_section() -> None:
    """severity, summary, description and a runbook_url whose anchor is a `### Name` in the runbook."""
    runbook = RUNBOOK.read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert name.startswith("Syncd"), name
        assert name.isalnum(), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        # GitHub's anchor for a `### SyncdFoo` heading is `#syncdfoo`.
        assert annotations["runbook_url"].endswith(f"README.md#{name.lower()}"), name
        assert f"\n### {name}\n" in runbook, f"no runbook section for {name}"


def test_every_metric_in_the_rules_is_exported_by_syncd() -> None:
    """A renamed metric would leave an alert silently unable to fire."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    names = referenced_names([rule["expr"] for group in groups for rule in group["rules"]])
    assert "syncd_leader" in names
    assert names - exported_names() == set()
