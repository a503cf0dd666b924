"""Installed as a user installs it: the wheel carries the migrations, and a fresh venv migrates a
fresh database with nothing of the checkout in reach."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from syncd.migrate import discover

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command to completion, failing the test with its output when it fails."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


# Installing every dependency into a fresh venv takes minutes on a loaded 2-core machine.
@pytest.mark.timeout(600)
async def test_installed_wheel_migrates_a_fresh_database(tmp_path: Path, empty_dsn: str) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("syncd-*.whl")
    packaged = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("syncd/migrations/")}
    assert packaged == {m.path.name for m in discover()}

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "--quiet", wheel, cwd=tmp_path)
    located = run(venv / "bin" / "python", "-c", "import syncd; print(syncd.__file__)", cwd=tmp_path)
    assert Path(located.stdout.strip()).is_relative_to(venv), "syncd imported from outside the venv"

    env = {"PATH": "/usr/bin:/bin", "SYNCD_PG_DSN": empty_dsn}
    done = run(venv / "bin" / "syncd", "migrate", cwd=tmp_path, env=env)
    assert f"applied {len(discover())} migration(s)" in done.stdout
    conn = await asyncpg.connect(empty_dsn)
    try:
        applied = await conn.fetchval("SELECT count(*) FROM syncd.schema_migrations")
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'workspace'")
    finally:
        await conn.close()
    assert applied == len(discover())
    assert tables > 0
