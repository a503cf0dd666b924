"""Dockerfile: hadolint passes (and fails on a broken copy), everything it copies exists, and the
image runs what the Kubernetes manifests expect (user, port, entrypoint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    """Lint one Dockerfile; any finding (info and up) is a failure."""
    return subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)


def instructions(name: str) -> list[str]:
    """Arguments of every `name` instruction (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(name + " ")]


def test_hadolint_is_clean() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        (("FROM python:3.11-slim-bookworm AS build", "FROM python AS build"), "DL3006"),
        (("install -y --no-install-recommends", "install -y"), "DL3015"),
    ],
)
def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path, broken: tuple[str, str], rule: str) -> None:
    copy = tmp_path / "Dockerfile"
    copy.write_text(DOCKERFILE.read_text().replace(*broken))
    result = hadolint(copy)
    assert result.returncode != 0
    assert rule in result.stdout


def test_everything_copied_from_the_context_exists_and_is_not_ignored() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for args in instructions("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            allowed = {f"!{source}", f"!{source.rstrip('/')}/"}
            assert allowed & set(ignored), f"{source} excluded by .dockerignore"


def test_image_matches_the_deployment() -> None:
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    port = next(p for c in pod["containers"] for p in c["ports"] if p["name"] == "metrics")["containerPort"]
    assert instructions("EXPOSE") == [str(port)]
    assert instructions("USER") == [f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    assert instructions("ENTRYPOINT") == ['["/opt/syncd/.venv/bin/syncd"]']
