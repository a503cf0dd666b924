"""`syncd quarantine accept` under the real daemon, with a record the real lowdb@7 writer left.

A legacy record (blank title, a category that is no slug) is held. Each wrong `accept` is one line
and its exit code and changes nothing; the right one is audited, the daemon applies the stated
values without touching the file, and from then on the accepted version is PostgreSQL's row for
`verify`, for a restarted daemon's start-up diff, for `promote` and for the reverse path's
foreign-write check. A service's later change in `pg-primary` writes the accepted values back with
the record's other keys kept; `rollback` finds both sides equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.database import connect
from syncd.tables import record_hash
from tests.e2e.daemon import DaemonProcess, write_config
from tests.e2e.test_lowdb_writers import node_modules, run_writer
from tests.e2e.test_poison import held
from tests.integration.cli.conftest import Ran, syncd

__all__ = ["node_modules"]  # the module fixture installing the npm writers

pytestmark = [
    pytest.mark.e2e,
]

LEGACY = {
    "id": "legacy-1",
    "title": "",
    "description": "written by a 2023 import tool",
    "category": "Ideas & Notes",
    "priority": "high",
    "status": "new",
    "tags": ["old"],
    "createdAt": "2023-04-01T10:00:00.000Z",
    "updatedAt": None,
    "importedFrom": "sheet-7",
}


def items(path: Path) -> dict[str, dict[str, Any]]:
    """The file's items by id."""
    return {r["id"]: r for r in json.loads(path.read_bytes())["items"]}


async def rows(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of one query on a fresh connection."""
    conn = await connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def failed(ran: Ran, rc: int, line: str) -> None:
    """One line on stderr, that one, and the exit code."""
    ran.assert_one_error_line()
    assert ran.rc == rc, ran.stderr
    assert line in ran.error_line, ran.error_line


async def test_an_accepted_record_flows_verifies_promotes_and_keeps_its_keys(dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "library.json"
    config = write_config(tmp_path / "syncd.toml", f'\n[[lowdb]]\nname = "w"\npath = "{path}"\nlayout = "workspace"\n')
    env = {"SYNCD_PG_DSN": dsn}

    def cli(*args: str) -> Ran:
        return syncd(*args, "--config", config, env=env)

    seed = [{"op": "category", "name": n} for n in ("dashboard", "ideas")]
    run_writer("v7", path, [*seed, {"op": "create", "id": "a", "title": "fine"}])
    run_writer("v7", path, [{"op": "put", "collection": "items", "record": LEGACY}])
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()

        async def one_held() -> bool:
            return len(await held(dsn)) == 1

        await daemon.until(one_held, 30, "the legacy record held")
        (entry,) = await held(dsn)
        ident = str(entry.id)

        # Each wrong accept: one line, its exit code, nothing changed.
        good = ("--set", "title=Untitled (legacy)", "--set", "category=ideas")
        failed(
            cli("quarantine", "accept", "99999", *good), 2, "no quarantine record with id 99999; nothing was changed"
        )
        failed(cli("quarantine", "accept", ident, "--set", "nope=1"), 2, "has no field 'nope' (fields: category, ")
        failed(
            cli("quarantine", "accept", ident, *good, "--set", "priority=urgent"),
            2,
            "--set priority=urgent: its column cannot hold it: priority must be one of",
        )
        failed(
            cli("quarantine", "accept", ident, "--set", "title=Untitled"),
            2,
            f"record {ident}: it would still be held: category must match [a-z0-9-]{{1,100}}, got 'Ideas & Notes' "
            "(state it: --set category=…)",
        )
        failed(cli("quarantine", "accept", ident), 2, "state a coercion: --set FIELD=VALUE or --coerce FIELD=RULE")
        keyless = await rows(
            dsn,
            """INSERT INTO syncd.quarantine (source, stream, table_name, key, raw, reason)
               VALUES ('lowdb', 'w', 'workspace.workspace_items', NULL, '{"title": "no id"}',
                       'items[9]: record has no usable ''id''') RETURNING id""",
        )
        failed(
            cli("quarantine", "accept", str(keyless[0]["id"]), *good),
            1,
            f"quarantine record {keyless[0]['id']} cannot be accepted: it has no usable id",
        )
        assert [e.status for e in await held(dsn)] == ["held", "held"]

        accepted = cli("quarantine", "accept", ident, *good)
        assert accepted.rc == 0, accepted.stderr
        assert accepted.stdout.strip() == (
            f'accepted 1 record(s): {ident} with title="Untitled (legacy)", category="ideas"'
        )

        async def applied() -> bool:
            found = await rows(dsn, "SELECT * FROM workspace.workspace_items WHERE id = 'legacy-1'")
            return bool(found) and found[0]["title"] == "Untitled (legacy)"

        await daemon.until(applied, 30, "the accepted record in PostgreSQL")
        (row,) = await rows(dsn, "SELECT * FROM workspace.workspace_items WHERE id = 'legacy-1'")
        assert (row["category"], row["priority"], row["tags"]) == ("ideas", "high", ["old"])
        assert row["extra"] == {"title": "", "category": "Ideas & Notes", "importedFrom": "sheet-7"}
        assert bytes(row["row_hash"]) == record_hash(LEGACY)
        assert items(path)["legacy-1"] == LEGACY  # the source file is not edited

        again = cli("quarantine", "accept", ident, *good)
        assert again.rc == 0, again.stderr
        assert again.stdout.strip() == f"already accepted with this coercion, nothing changed: {ident}"
        failed(
            cli("quarantine", "accept", ident, "--set", "title=Other", "--set", "category=ideas"),
            1,
            f"not held, left alone: {ident} (accepted with other values)",
        )

        audit = cli("audit", "workspace_items", "legacy-1", "--json")
        assert audit.rc == 0, audit.stderr
        history = [orjson.loads(line) for line in audit.stdout.splitlines()]
        assert [(h["op"], h["origin"]) for h in history] == [("accept", "quarantine"), ("insert", "syncd")]
        assert history[0]["changes"] == {
            "category": {"old": "Ideas & Notes", "new": "ideas"},
            "title": {"old": "", "new": "Untitled (legacy)"},
        }
        listed = orjson.loads(cli("quarantine", "list", "--all", "--json").stdout.splitlines()[-1])
        assert (listed["status"], listed["coercion"]) == (
            "accepted",
            {"title": "Untitled (legacy)", "category": "ideas"},
        )

        discard = cli("quarantine", "discard", str(keyless[0]["id"]))
        assert discard.rc == 0, discard.stderr
        verify = cli("verify", "w")
        assert verify.rc == 0, verify.stdout + verify.stderr
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]

    # A restarted daemon's start-up diff finds the accepted version applied: nothing is held again.
    daemon = DaemonProcess(config, dsn).start()
    try:
        await daemon.leading()
        assert await held(dsn) == []
        promote = cli("cutover", "promote", "w")
        assert promote.rc == 0, promote.stdout + promote.stderr

        async def reverse_ran() -> bool:
            _, body = await daemon.get("/status")
            stream = body.get("streams", {}).get("w", {})
            return stream.get("mode") == "pg-primary" and stream.get("caught_up") is True

        await daemon.until(reverse_ran, 30, "the reverse path's first pass")
        assert await held(dsn) == []  # the accepted version is no foreign write
        assert items(path)["legacy-1"] == LEGACY

        # The service changes the record on PostgreSQL: the file gets the accepted values, its keys kept.
        await rows(dsn, "UPDATE workspace.workspace_items SET status = 'review' WHERE id = 'legacy-1' RETURNING id")

        async def written_back() -> bool:
            return items(path)["legacy-1"]["status"] == "review"

        await daemon.until(written_back, 30, "the service's change in the file")
        record = items(path)["legacy-1"]
        assert list(record) == list(LEGACY)
        assert record["updatedAt"] is not None  # the database keeps updated_at on a service's update
        changed = {
            "title": "Untitled (legacy)",
            "category": "ideas",
            "status": "review",
            "updatedAt": record["updatedAt"],
        }
        assert record == {**LEGACY, **changed}

        rollback = cli("cutover", "rollback", "w")
        assert rollback.rc == 0, rollback.stdout + rollback.stderr
        assert cli("verify", "w").rc == 0
        assert await held(dsn) == []
    finally:
        assert daemon.stop() == 0, daemon.output()[-3000:]
