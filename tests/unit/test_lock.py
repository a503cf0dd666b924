"""The hashed lock files match pyproject.toml: every declared dependency is pinned there, inside its
specifier, with hashes; nothing is pinned as direct that pyproject no longer declares; run.lock is
dev.lock's runtime part at the same versions. On a failure: `make lock`, and commit both files."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass(frozen=True)
class Pin:
    """One package of a lock file."""

    version: str
    hashes: int
    direct: bool
    """Annotated `via syncd (pyproject.toml)`: a dependency pyproject.toml names itself."""


def read_lock(path: Path) -> dict[str, Pin]:
    """Package name → its pin, from pip-compile's output."""
    pins: dict[str, Pin] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    for block in blocks:
        match = _PIN.match(block)
        if match:
            pins[canonicalize_name(match.group(1))] = Pin(
                match.group(2), block.count("--hash=sha256:"), "syncd (pyproject.toml)" in block
            )
    return pins


def declared(*extras: str) -> list[Requirement]:
    """pyproject.toml's dependencies, plus those of `extras`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]
    return [Requirement(d) for d in names]


@pytest.mark.parametrize(("lock", "extras"), [("dev.lock", ("dev",)), ("run.lock", ())])
def test_every_declared_dependency_is_pinned_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    pins = read_lock(LOCKS / lock)
    wanted = declared(*extras)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements/{lock}: run make lock"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name].version}, outside {req}: run make lock"
        )
    assert all(p.hashes for p in pins.values()), f"a pin without --hash in requirements/{lock}"
    direct = {n for n, p in pins.items() if p.direct}
    assert direct == {canonicalize_name(r.name) for r in wanted}, f"requirements/{lock} is stale: run make lock"


def test_run_lock_is_the_runtime_part_of_dev_lock_at_the_same_versions() -> None:
    run, dev = read_lock(LOCKS / "run.lock"), read_lock(LOCKS / "dev.lock")
    assert {n: p.version for n, p in run.items()} == {n: dev[n].version for n in run if n in dev}
    assert set(run) <= set(dev)


def test_the_installers_use_the_locks() -> None:
    """make run/test (hence CI) and the Dockerfile install from the locks with --require-hashes."""
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r $(1)" in makefile
    assert "$(call install_locked,$(RUN_LOCK))" in makefile
    assert "$(call install_locked,$(DEV_LOCK))" in makefile
    assert "--require-hashes -r requirements/run.lock" in dockerfile
