"""The commands' shared plumbing: a database that cannot be reached is one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cluster import free_port

SYNCD = Path(sys.executable).with_name("syncd")


@pytest.mark.parametrize("command", [["quarantine", "list"], ["audit", "workspace_items", "k"]])
def test_unreachable_postgres_is_one_clear_line(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(f'[postgres]\ndsn = "postgresql://syncd:s3cret@127.0.0.1:{free_port()}/x"\n')
    done = subprocess.run([str(SYNCD), *command, "--config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("syncd: cannot connect to PostgreSQL at postgresql://syncd:")
    assert "Traceback" not in done.stderr
    assert "s3cret" not in done.stderr
