"""Running the Prisma 7 client the Node services use, offline, from tests.

`prisma generate` runs with PRISMA_SCHEMA_ENGINE_BINARY pointing at a stub that exits 1 (the CLI
insists on the binary but neither validate nor generate uses it). The client is generated into a
copy of schemas/prisma under the test's tmp_path, never into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from syncd.prisma import PRISMA_DIR

NODE_DIR = Path(__file__).parent / "node"
NODE_BIN = NODE_DIR / "node_modules" / ".bin"
SCRIPT = NODE_DIR / "prisma" / "read-and-write.ts"
NPX = shutil.which("npx")


def install_node_modules() -> None:
    """prisma, @prisma/client, @prisma/adapter-pg, pg and tsx installed under tests/e2e/node."""
    if not (NODE_BIN / "prisma").exists() or not (NODE_BIN / "tsx").exists():
        subprocess.run(["make", "-s", "-C", str(NODE_DIR), "install"], check=True, timeout=300)


def prisma_project(tmp_path: Path) -> Path:
    """A copy of schemas/prisma that resolves the test's node_modules; the client is generated inside it.

    Copying keeps the generated client out of the repository and lets prisma.config.ts import
    `prisma/config` exactly as it would in a service's checkout.
    """
    shutil.copytree(PRISMA_DIR, tmp_path / "prisma", ignore=shutil.ignore_patterns("generated"))
    (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    (tmp_path / "package.json").write_text('{"private": true, "type": "module"}\n', encoding="utf-8")
    return tmp_path / "prisma"


def prisma_env(tmp_path: Path, dsn: str) -> dict[str, str]:
    """The environment offline Prisma needs: a schema-engine stub, and the database URL."""
    stub = tmp_path / "schema-engine-stub"
    stub.write_text("#!/bin/sh\n# Offline: there is no schema engine; validate and generate never call it.\nexit 1\n")
    stub.chmod(0o755)
    return {**os.environ, "PRISMA_SCHEMA_ENGINE_BINARY": str(stub), "DATABASE_URL": dsn}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a node tool to completion, failing the test with its output when it fails."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def generate(project: Path, env: dict[str, str]) -> Path:
    """`prisma generate` into the project; the generated client module."""
    assert "Generated Prisma Client" in run([str(NODE_BIN / "prisma"), "generate"], project, env)
    return project / "generated" / "client.ts"


def write_through_prisma(client: Path, env: dict[str, str], delegates: list[str], new_id: str, synced_id: str) -> str:
    """Run read-and-write.ts: read `delegates`, create `new_id`, update `synced_id`, rename `new_id`."""
    args = [str(NODE_BIN / "tsx"), str(SCRIPT), str(client), ",".join(delegates), new_id, synced_id]
    return run(args, NODE_DIR, env).strip().splitlines()[-1]
