"""`syncd quarantine list`: readable piped (80 columns): ids, streams and keys whole, the reason folded."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from tests.integration.cli.conftest import syncd, write_config

KEY = "item-1733011200000-9f8e7d6c5b4a"
REASON = "workspace.workspace_items record: priority 'urgent' is not one of low, medium, high, critical (from the file)"


async def test_list_reads_at_80_columns_piped(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason)
               VALUES ('lowdb', 'documentation', 'documentation.documentation_systems', $1, '{"id": 1}', $2)""",
            KEY,
            REASON,
        )
    finally:
        await conn.close()
    config = write_config(tmp_path / "syncd.toml", dsn)
    listed = syncd("quarantine", "list", "--config", config)  # stdout is a pipe: rich's 80 columns
    assert listed.rc == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, listed.stdout
    cells = [line.split() for line in lines]
    assert any(c[:3] == ["1", "held", "documentation"] for c in cells), listed.stdout  # id, status, stream
    assert any("documentation.documentation_systems" in c for c in cells), listed.stdout
    assert any(KEY in c for c in cells), listed.stdout  # whole, never cut
    words = listed.stdout.split()
    assert all(w in words for w in REASON.split()[2:]), listed.stdout  # the reason folds, nothing is cut
    as_json = syncd("quarantine", "list", "--json", "--config", config)
    (entry,) = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert (entry["key"], entry["reason"], entry["status"]) == (KEY, REASON, "held")
