"""The server settings syncd's own clusters run with are the ones the README recommends."""

from __future__ import annotations

import re
from pathlib import Path

from syncd.cluster import FIRST_LOAD_SETTINGS

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### PostgreSQL settings for a first load"


def _recommended() -> dict[str, str]:
    text = README.read_text()
    assert SECTION in text, f"README lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n#", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_readme_recommends_what_the_clusters_run_with() -> None:
    assert _recommended() == FIRST_LOAD_SETTINGS
