"""deploy/k8s: every manifest passes `kubernetes-validate --strict`, a broken one fails, and the
pieces agree with each other and with the daemon (ports, probes, labels, config, secret)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import Config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Run kubernetes-validate --strict on one file."""
    return subprocess.run([str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)


def manifest(kind: str) -> dict[str, Any]:
    """The one manifest of `kind`."""
    found = [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} manifests"
    return found[0]


def container(name: str = "syncd") -> dict[str, Any]:
    """A container of the Deployment's pod template."""
    spec = manifest("Deployment")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path: Path) -> None:
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_manifest_fails(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    broken.write_text((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text().replace("replicas: 2", "replicas: two"))
    result = validate(broken)
    assert result.returncode != 0
    assert "replicas" in result.stdout + result.stderr


def test_every_required_piece_is_there() -> None:
    kinds = {d["kind"] for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d}
    assert kinds >= {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "CronJob"}


def test_leader_plus_standby_with_probes_on_the_daemons_endpoints() -> None:
    assert manifest("Deployment")["spec"]["replicas"] == 2
    syncd = container()
    assert syncd["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert syncd["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_configmap_config_validates(tmp_path: Path) -> None:
    toml = tmp_path / "syncd.toml"
    toml.write_text(manifest("ConfigMap")["data"]["syncd.toml"])
    config = Config.load(toml, {"SYNCD_PG_DSN": "postgresql://syncd@db/tradingsystem"})
    port = next(p for p in container()["ports"] if p["name"] == "metrics")["containerPort"]
    assert (config.http.host, config.http.port) == ("0.0.0.0", port)
    mounted = {m["mountPath"] for m in container()["volumeMounts"]}
    assert all(any(str(f.path).startswith(m) for m in mounted) for f in config.lowdb)


@pytest.mark.parametrize("name", ["syncd", "migrate"])
def test_containers_run_non_root_on_a_read_only_root(name: str) -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container(name)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "limits" in container(name)["resources"]


def test_dsn_comes_from_the_secret_everywhere() -> None:
    secret = manifest("Secret")["metadata"]["name"]
    backup = manifest("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    for c in (container(), container("migrate"), backup):
        dsn = next(e for e in c["env"] if e["name"] == "SYNCD_PG_DSN")
        assert dsn["valueFrom"]["secretKeyRef"]["name"] == secret, c["name"]


def test_service_and_budget_select_the_pods() -> None:
    labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = manifest(kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    assert manifest("PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_backup_job_runs_syncd_backup() -> None:
    cronjob = manifest("CronJob")["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    command = " ".join(cronjob["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "syncd backup --config /etc/syncd/syncd.toml --out" in command
