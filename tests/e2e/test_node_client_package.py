"""clients/node's own tests (node's test runner, compiled by tsc with `strict`) against a migrated database."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.workspace_service import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),  # tsc on a busy 2-core machine
]

PACKAGE = ROOT / "clients" / "node"


def test_the_cutover_client_package_passes_its_own_tests(dsn: str) -> None:
    """Type-check and build (make, as `npm test` does), then every node:test case against the real PostgreSQL."""
    subprocess.run(["make", "-s", "-C", str(PACKAGE), "build"], check=True, timeout=240)
    env = {**os.environ, "CUTOVER_TEST_DSN": dsn}
    args = ["node", "--test", "--test-concurrency=1", "dist/test/"]
    done = subprocess.run(args, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout, done.stdout[-2000:]
