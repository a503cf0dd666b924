"""What every end-to-end test needs: the real Node programs they drive."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def node_installed() -> None:
    """Without node the e2e tests fail here, never skip: a skipped real-writer test hides a missing install."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the e2e tests drive real lowdb writers, Prisma and the Express service")
