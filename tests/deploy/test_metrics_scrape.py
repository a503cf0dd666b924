"""The real daemon's /metrics: every metric the alerts and the dashboard use is there, and promtool lints it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_grafana import exprs as dashboard_exprs
from tests.deploy.test_grafana import referenced_names
from tests.e2e.daemon import DaemonProcess, write_config
from tests.lowdb_files import item, write_v7

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / ".tools" / "usr" / "bin" / "promtool"
RULES = ROOT / "deploy" / "prometheus" / "syncd-alerts.yml"

pytestmark = pytest.mark.e2e


def rule_exprs() -> list[str]:
    """Every expression of the alert rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def sampled_names(exposition: str) -> set[str]:
    """Names that have at least one sample line (comments and HELP/TYPE-only families excluded)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def missing_from(exposition: str) -> set[str]:
    """Metric names the alerts or the dashboard use that have no sample in `exposition`."""
    wanted = referenced_names(rule_exprs()) | referenced_names(dashboard_exprs())
    return wanted - sampled_names(exposition)


# Two valid items and one without a title: the last is quarantined, so that path runs too.
RECORDS = [item("a1"), item("a2"), {**item("bad"), "title": ""}]


@pytest.fixture
async def daemon(dsn: str, tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    """A leading daemon mirroring one LowDB file (tmp_path/library.json); must exit 0 on SIGTERM."""
    write_v7(tmp_path / "library.json", {"items": RECORDS, "categories": []})
    config = write_config(
        tmp_path / "syncd.toml",
        f'\n[[lowdb]]\nname = "workspace"\npath = "{tmp_path / "library.json"}"\nlayout = "workspace"\n',
    )
    # The leader publishes syncd_verify_mismatch_rows{table} only after its first parity check,
    # which comes min(verify_interval, 5s) after it starts: a short interval keeps the test quick.
    process = DaemonProcess(config, dsn, env={"SYNCD_DAEMON_VERIFY_INTERVAL": "1s"}).start()
    try:
        await process.leading()
        yield process
    finally:
        code = process.stop()
    assert code == 0, process.output()


async def metric_line(daemon: DaemonProcess, line: str, timeout: float) -> bool:
    """True once `line` (a whole sample line) appears in /metrics within `timeout` seconds."""

    async def present() -> bool:
        status, body = await daemon.get("/metrics")
        return status == 200 and line in body.splitlines()

    try:
        await daemon.until(present, timeout, line)
    except AssertionError:
        return False
    return True


@pytest.fixture
async def scrape(daemon: DaemonProcess) -> str:
    """/metrics of the daemon once every metric the alerts and the dashboard use has a sample."""
    body = ""

    async def complete() -> bool:
        nonlocal body
        status, body = await daemon.get("/metrics")
        return status == 200 and not missing_from(body)

    try:
        await daemon.until(complete, 20, "every alert/dashboard metric in /metrics")
    except AssertionError as exc:
        raise AssertionError(f"no sample for {sorted(missing_from(body))}\n{exc}") from None
    return body


async def test_every_metric_of_the_alerts_and_the_dashboard_is_scraped(scrape: str) -> None:
    """Names the rules and panels use all have sample lines in a real scrape (checked by the fixture)."""
    assert missing_from(scrape) == set()
    # The per-stream series carry the LowDB entry's name as their stream label.
    assert 'syncd_source_up{stream="workspace"} 1.0' in scrape
    assert 'syncd_mass_delete_held{stream="workspace"} 0.0' in scrape
    assert 'syncd_rows_applied_total{op="insert",stream="workspace",table="workspace.workspace_items"} 2.0' in scrape
    assert "syncd_leader 1.0" in scrape


async def test_the_quarantine_gauge_counts_a_held_record_without_another_write(daemon: DaemonProcess) -> None:
    """SyncdQuarantineGrowing needs the gauge to move when the batch that quarantined commits."""
    assert await metric_line(daemon, 'syncd_quarantine_records{stream="workspace"} 1.0', 3)
    assert (await daemon.get("/status"))[1]["streams"]["workspace"]["quarantined"] == 1


async def test_a_quiet_healthy_stream_is_not_reported_as_failing(daemon: DaemonProcess) -> None:
    """No write for seconds: the stream is still in sync, so seconds-since-success stays near 0."""
    await asyncio.sleep(3)  # the quiet period under test
    status = (await daemon.get("/status"))[1]["streams"]["workspace"]
    assert status["seconds_since_last_success"] < 1.0
    await daemon.until(lambda: _below(daemon, 1.0), 3, "syncd_seconds_since_last_success below 1 s")


async def _below(daemon: DaemonProcess, bound: float) -> bool:
    """syncd_seconds_since_last_success{stream="workspace"} is under `bound` in a scrape."""
    prefix = 'syncd_seconds_since_last_success{stream="workspace"} '
    body = (await daemon.get("/metrics"))[1]
    return any(float(line[len(prefix):]) < bound for line in body.splitlines() if line.startswith(prefix))


@pytest.mark.skipif(not PROMTOOL.is_file(), reason=f"promtool not found at {PROMTOOL}: run `make tools`")
async def test_promtool_check_metrics_accepts_the_scrape(scrape: str) -> None:
    """`promtool check metrics` (exposition parse + naming lint) exits 0 on the real scrape."""
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
