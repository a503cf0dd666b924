"""`syncd doctor`: a verdict and a fix per check, exit 1 when any fails; `--bundle` holds no secret."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from syncd.cluster import free_port
from tests.integration.cli.conftest import ROLE_PASSWORD, Ran, syncd, write_config
from tests.lowdb_files import item, write_v7

QUESTDB_PASSWORD = "Qdb-5e1d0b-only-here"


def verdicts(ran: Ran) -> dict[str, str]:
    """check name → verdict, from the table's first line of each row."""
    found = {}
    for line in ran.stdout.splitlines():
        match = re.match(r"^ ?(\S.*?) {2,}(ok|WARN|FAIL) ", line + " ")
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_a_healthy_deployment_passes(dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "workspace" / "library.json"
    path.parent.mkdir()
    write_v7(path, {"items": [item("a1")], "categories": []})
    lowdb = f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
    lowdb += f'[[lowdb]]\nname = "workspace"\npath = "{path}"\nlayout = "workspace"\n'
    ran = syncd("doctor", "--config", write_config(tmp_path / "syncd.toml", dsn, lowdb))
    assert ran.rc == 0, ran.stdout + ran.stderr
    found = verdicts(ran)
    for check in ("config", "postgresql", "postgresql version", "clock skew (postgresql)", "migrations", "privileges",
                  "lowdb workspace"):
        assert found.get(check) == "ok", (check, ran.stdout)
    assert any(name.startswith("http 127.0.0.1:") for name in found)
    assert ran.stdout.splitlines()[-1] == f"{len(found)} checks: 0 failed, 0 warning(s)"
    assert max(len(line) for line in ran.stdout.splitlines()) <= 80


def test_every_problem_is_a_line_with_its_fix_and_the_bundle_is_redacted(
    pg_server: str, empty_dsn: str, password_role: str, tmp_path: Path
) -> None:
    """An unmigrated database, a role that may not create, a missing directory, QuestDB down: exit 1."""
    host_port = pg_server.split("@", 1)[1].split("/", 1)[0]
    database = empty_dsn.rsplit("/", 1)[1]
    dsn = f"postgresql://{password_role}:{ROLE_PASSWORD}@{host_port}/{database}"
    body = (
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[[lowdb]]\nname = "docs"\npath = "/nonexistent-syncd-dir/db.json"\nlayout = "documentation"\n'
        f'[questdb]\nhost = "127.0.0.1"\nhttp_port = {free_port()}\npassword = "{QUESTDB_PASSWORD}"\n'
    )
    config = write_config(tmp_path / "syncd.toml", dsn, body)
    log = tmp_path / "syncd.log"
    log.write_text(f'{{"event": "connecting", "dsn": "{dsn}"}}\n')  # a careless log line: the bundle scrubs it
    bundle = tmp_path / "support.tar.gz"
    ran = syncd("doctor", "--config", config, "--bundle", bundle, "--logs", log)
    assert ran.rc == 1, ran.stdout + ran.stderr
    found = verdicts(ran)
    assert found["postgresql"] == "ok"
    assert found["migrations"] == "FAIL"
    assert found["privileges"] == "FAIL"
    assert found["lowdb docs"] == "FAIL"
    assert found["questdb"] == "FAIL"
    text = " ".join(ran.stdout.split())
    assert "→ syncd migrate" in text
    assert f"GRANT CREATE ON DATABASE <db> TO {password_role}" in text
    assert "mkdir -p /nonexistent-syncd-dir" in text
    assert re.search(r"\d+ checks: 4 failed, \d+ warning\(s\)$", ran.stdout.strip())
    assert ROLE_PASSWORD not in ran.stdout + ran.stderr

    with tarfile.open(bundle) as tar:
        names = sorted(Path(m.name).name for m in tar.getmembers())
        contents = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert names == ["config.json", "doctor.json", "metrics.txt", "postgresql-settings.json", "status.txt",
                     "syncd.log", "versions.json"]
    for secret in (ROLE_PASSWORD, QUESTDB_PASSWORD):
        assert secret.encode() not in contents, f"{secret} leaked into the bundle"
    assert b"server_version" in contents
    assert b'"connecting"' in contents  # the log is there, scrubbed
