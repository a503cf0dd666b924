"""`syncd backup` and `syncd restore`: pg_dump -Fc of the synced schemas, the LowDB files, a manifest.

The manifest (row count and an order-independent hash per table) is computed in the very snapshot
pg_dump reads (`pg_export_snapshot` + `--snapshot`), so a daemon writing meanwhile cannot make it
disagree with the dump. pg_dump and pg_restore get argument lists, never a shell string, and the
password travels in PGPASSWORD, never on a command line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from syncd.cluster import find_bindir
from syncd.config import LowdbSettings
from syncd.database import Connection, connect
from syncd.errors import BackupError

SCHEMAS = ("workspace", "documentation", "signals", "reporting", "syncd")
DUMP_FILE = "syncd.dump"
MANIFEST_FILE = "manifest.json"
LOWDB_DIR = "lowdb"

_TABLES = """
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"""


@dataclass(frozen=True, slots=True)
class Manifest:
    """Row count and hash per table, plus each LowDB file's hash; what a restore must reproduce."""

    created_at: str
    tables: Mapping[str, Mapping[str, Any]]
    files: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> bytes:
        """The manifest as stored."""
        return orjson.dumps(
            {"created_at": self.created_at, "tables": self.tables, "files": self.files}, option=orjson.OPT_INDENT_2
        )

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a stored manifest."""
        raw = orjson.loads(path.read_bytes())
        return cls(raw["created_at"], raw["tables"], raw["files"])


def tool(name: str) -> str:
    """Path of a PostgreSQL client tool: the server's version first, then PATH."""
    bindir = find_bindir()
    if bindir is not None and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(name, "not found (install postgresql-client-15)")
    return found


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and the environment that carries the password instead."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        host = parts.hostname or ""
        userinfo = f"{parts.username}@" if parts.username else ""
        netloc = f"{userinfo}{host}" + (f":{parts.port}" if parts.port else "")
        dsn = urlunsplit(parts._replace(netloc=netloc))
    return dsn, env


async def table_digests(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per table: row count and the XOR of 64-bit row-text hashes (order-independent, set-based)."""
    await conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3")
    out: dict[str, dict[str, Any]] = {}
    for (table,) in await conn.fetch(_TABLES, list(SCHEMAS)):
        row = await conn.fetchrow(
            f"""SELECT count(*) AS n,
                       coalesce(bit_xor(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint), 0) AS h
                  FROM {table} t"""
        )
        assert row is not None
        out[table] = {"rows": row["n"], "hash": f"{row['h'] & (2**64 - 1):016x}"}
    return out


def file_entry(path: Path) -> dict[str, Any]:
    """Size and hash of a LowDB file copy."""
    data = path.read_bytes()
    return {"bytes": len(data), "blake2b": blake2b(data, digest_size=16).hexdigest()}


async def backup(dsn: str, out: Path, lowdb: Sequence[LowdbSettings]) -> Manifest:
    """Dump the synced schemas and copy the LowDB files into `out` (must not exist or be empty).

    A backup that fails leaves nothing behind: what it created (`out` and any parent it made, or
    the contents of an `out` that was empty) is removed before the error propagates.
    """
    created = await asyncio.to_thread(_prepare, out)
    try:
        conn = await connect(dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                tables = await table_digests(conn)
                await _pg_dump(dsn, out / DUMP_FILE, snapshot)
        finally:
            await conn.close()
        files = {entry.name: await asyncio.to_thread(_copy_file, entry, out / LOWDB_DIR) for entry in lowdb}
        manifest = Manifest(datetime.now(UTC).isoformat(), tables, files)
        (out / MANIFEST_FILE).write_bytes(manifest.to_json())
    except BaseException:
        _undo(out, created)
        raise
    return manifest


def _prepare(out: Path) -> Path | None:
    """Create `out/lowdb`; return the topmost directory this created (None: `out` existed, empty)."""
    if out.exists() and any(out.iterdir()):
        raise BackupError("backup", f"{out} is not empty")
    missing = [p for p in (out, *out.parents) if not p.exists()]
    (out / LOWDB_DIR).mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _undo(out: Path, created: Path | None) -> None:
    """Remove what a failed backup wrote (an `out` that existed was empty before: all of it is ours)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _copy_file(entry: LowdbSettings, into: Path) -> dict[str, Any]:
    target = into / f"{entry.name}.json"
    shutil.copyfile(entry.path, target)
    return {"path": str(entry.path), **file_entry(target)}


async def _pg_dump(dsn: str, target: Path, snapshot: str) -> None:
    url, env = libpq_target(dsn)
    args = [tool("pg_dump"), "--format=custom", f"--file={target}", f"--snapshot={snapshot}", "--no-owner"]
    args += [f"--schema={s}" for s in SCHEMAS] + [f"--dbname={url}"]
    await _run("pg_dump", args, env)


async def restore(dsn: str, source: Path) -> Manifest:
    """pg_restore `source` into the (empty) database of `dsn`, then check it against the manifest."""
    manifest = Manifest.load(source / MANIFEST_FILE)
    conn = await connect(dsn)
    try:
        present = await conn.fetch(_TABLES, list(SCHEMAS))
        if present:
            raise BackupError("restore", f"target database is not empty: {present[0][0]} exists")
        url, env = libpq_target(dsn)
        args = [tool("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges", f"--dbname={url}"]
        await _run("pg_restore", [*args, str(source / DUMP_FILE)], env)
        async with conn.transaction(readonly=True):
            restored = await table_digests(conn)
    finally:
        await conn.close()
    check(manifest, restored, source)
    return manifest


def check(manifest: Manifest, restored: Mapping[str, Mapping[str, Any]], source: Path) -> None:
    """Raise BackupError naming every table or file that differs from the manifest."""
    problems = [
        f"{table}: manifest {want['rows']} rows/{want['hash']}, restored "
        + (f"{restored[table]['rows']} rows/{restored[table]['hash']}" if table in restored else "missing")
        for table, want in manifest.tables.items()
        if restored.get(table) != want
    ]
    for name, want in manifest.files.items():
        copy = source / LOWDB_DIR / f"{name}.json"
        got = file_entry(copy) if copy.exists() else None
        if got is None or got["blake2b"] != want["blake2b"]:
            problems.append(f"LowDB copy {copy}: does not match the manifest")
    if problems:
        raise BackupError("manifest", "; ".join(problems))


async def _run(step: str, args: list[str], env: Mapping[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(*args, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError(step, f"exit {proc.returncode}: {stderr.decode(errors='replace').strip()[-2000:]}")
