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


async def test_accept_refuses_a_questdb_row_and_names_a_stream_the_config_lacks(dsn: str, tmp_path: Path) -> None:
    """QuestDB stays the truth for its rows (exit 1); a record of no configured LowDB entry is a bad argument (2)."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [
            await conn.fetchval(
                """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason)
                   VALUES ($1, $2, $3, 'k', '{"id": "k"}', 'refused') RETURNING id""",
                source,
                stream,
                table,
            )
            for source, stream, table in (
                ("questdb", "questdb:telegram_bots", "signals.telegram_bots"),
                ("lowdb", "gone", "workspace.workspace_items"),
            )
        ]
    finally:
        await conn.close()
    config = write_config(tmp_path / "syncd.toml", dsn)
    questdb = syncd("quarantine", "accept", str(ids[0]), "--set", "title=x", "--config", config)
    questdb.assert_one_error_line()
    assert questdb.rc == 1, questdb.stderr
    assert questdb.error_line == (
        f"syncd quarantine accept: quarantine record {ids[0]} cannot be accepted: it is a QuestDB row; "
        "fix the cause and replay it, or discard it"
    )
    gone = syncd("quarantine", "accept", str(ids[1]), "--set", "title=x", "--config", config)
    assert gone.rc == 2, gone.stderr
    assert gone.error_line == (
        f"syncd quarantine accept: record {ids[1]}: its stream 'gone' is no LowDB entry of this config "
        "(entries: none configured)"
    )
