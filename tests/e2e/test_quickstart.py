"""The README's quick start, copy-pasted: `make run` in a fresh clone, then every command of the
second shell's block, as written, from another shell that only sourced `.syncd/env`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
# Variables of the test's own environment that would point the clone elsewhere than its own set-up.
FOREIGN = ("SYNCD_PG_DSN", "DATABASE_URL", "SYNCD_CONFIG", "VIRTUAL_ENV", "SYNCD_TEST_DSN")


def quick_start_commands(readme: str) -> list[str]:
    """The second shell's block of README's "Quick start": each command after `source .syncd/env`."""
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    (block,) = [b for b in blocks if "source .syncd/env" in b]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    assert lines[0] == "source .syncd/env"
    return [line for line in lines[1:] if line]


@pytest.fixture
def clone() -> Iterator[Path]:
    """A fresh clone of HEAD in a directory PostgreSQL (as `postgres`) can traverse."""
    parent = Path(tempfile.mkdtemp(prefix="syncd-quickstart-"))
    parent.chmod(0o755)
    target = parent / "syncd"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    try:
        yield target
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def wait_ready(listen: str, make: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until /readyz answers 200 (the clone bootstraps its .venv first: minutes on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if make.poll() is not None:
            raise AssertionError(f"make run exited {make.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://{listen}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_readme_quick_start_from_a_fresh_clone(clone: Path) -> None:
    commands = quick_start_commands((clone / "README.md").read_text())
    assert any(c.startswith("syncd ") for c in commands)
    listen = f"127.0.0.1:{free_port()}"  # the example's 9187 may be taken on a shared machine
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    log = clone.parent / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(["make", "run"], cwd=clone, env={**env, "SYNCD_HTTP_LISTEN": listen}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(listen, make, log, timeout=600)
        printed = log.read_text()
        dsn = re.search(r"^syncd: PostgreSQL (postgresql://\S+)", printed, re.MULTILINE)
        assert dsn, printed
        envfile = clone / ".syncd" / "env"
        assert envfile.stat().st_mode & 0o077 == 0, "the env file holds the DSN: owner only"
        assert f"export SYNCD_PG_DSN={dsn.group(1)}" in envfile.read_text()
        other_shell = {k: v for k, v in env.items() if not k.startswith("SYNCD_")}
        for command in commands:
            ran = subprocess.run(["bash", "-c", f"source .syncd/env && {command}"], cwd=clone, env=other_shell,
                                 capture_output=True, text=True, timeout=120, check=False)
            assert ran.returncode == 0, f"{command}: exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
            assert ran.stdout.strip(), f"{command}: printed nothing"
            if command.startswith("syncd "):  # piped: every table fits 80 columns
                assert max(len(line) for line in ran.stdout.splitlines()) <= 80, f"{command}:\n{ran.stdout}"
            if command == "syncd status":
                assert re.search(r"^ ?workspace +\S+ +mirror ", ran.stdout, re.MULTILINE), ran.stdout
                assert re.search(r"^ ?documentation +\S+ +mirror ", ran.stdout, re.MULTILINE), ran.stdout
            if command == "syncd status --loads":
                assert re.search(r"^initial loads: 2 done", ran.stdout, re.MULTILINE), ran.stdout
                assert re.search(r"^ ?workspace +6 +6 +0 +0 +0 ", ran.stdout, re.MULTILINE), ran.stdout
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the first shell
        make.wait(60)
    assert not (clone / ".syncd" / "env").exists(), "make run left .syncd/env behind"
    assert not (clone / ".syncd" / "pg" / "data" / "postmaster.pid").exists(), "PostgreSQL still running"
