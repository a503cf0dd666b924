"""Identifiers: hostile names from the config are refused at load, naming the setting; every name
that reaches SQL is quoted by the one helper (its real-PostgreSQL test: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import Config
from syncd.errors import ConfigError
from syncd.identifiers import quote_ident, quote_table

DSN = "postgresql://syncd@127.0.0.1:5432/tradingsystem"
HOSTILE = [
    'work"space',
    "w; DROP TABLE workspace.workspace_items; --",
    "Workspace",
    "wörkspace",
    "w" * 64,
    "",
    "1st",
    "w space",
]


def load(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> Config:
    """Load a config with `body` after its [postgres] section."""
    path = tmp_path / "syncd.toml"
    path.write_text(f'[postgres]\ndsn = "{DSN}"\n{body}', encoding="utf-8")
    return Config.load(path, env or {})


def toml_string(value: str) -> str:
    """`value` as a TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_lowdb_name_is_refused_at_load_naming_the_setting(tmp_path: Path, name: str) -> None:
    body = f'[[lowdb]]\nname = {toml_string(name)}\npath = "db.json"\nlayout = "workspace"\n'
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    assert str(caught.value) == (
        f"config lowdb.0.name (from {tmp_path / 'syncd.toml'}): not a name: use lowercase letters, digits, _ and -, "
        f"starting with a letter, at most 63 bytes, got {name!r}"
    )


@pytest.mark.parametrize("name", [n for n in HOSTILE if n not in ("Workspace", "1st")] + ["-x", "a" * 64])
def test_a_hostile_collection_name_is_refused_at_load(tmp_path: Path, name: str) -> None:
    body = (
        '[[lowdb]]\nname = "notes"\npath = "db.json"\nlayout = "generic"\n'
        f"[[lowdb.collections]]\nname = {toml_string(name)}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    assert caught.value.key == "lowdb.0.collections.0.name"
    assert "not a name: use ASCII letters, digits, _ and -, not starting with a digit or -" in str(caught.value)


def test_names_in_the_rules_load(tmp_path: Path) -> None:
    body = (
        f'[[lowdb]]\nname = "{"w" * 63}"\npath = "db.json"\nlayout = "generic"\n'
        '[[lowdb.collections]]\nname = "userSettings"\n'
    )
    config = load(tmp_path, body)
    assert (config.lowdb[0].name, config.lowdb[0].collections[0].name) == ("w" * 63, "userSettings")


@pytest.mark.parametrize("table", ["tp_capital_signals; DROP TABLE x", "TP_CAPITAL_SIGNALS", '"telegram_bots"'])
def test_a_questdb_table_is_one_syncd_knows_from_the_file_or_the_environment(tmp_path: Path, table: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[questdb]\ntables = [{toml_string(table)}]\n")
    assert caught.value.key == "questdb.tables.0"
    assert "should be 'tp_capital_signals', 'telegram_bots' or 'telegram_channels'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[questdb]\n", {"SYNCD_QUESTDB_TABLES": f"telegram_bots,{table}"})
    assert (caught.value.key, caught.value.origin) == ("questdb.tables.1", "env SYNCD_QUESTDB_TABLES")


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("workspace_items", '"workspace_items"'),
        ('a"b', '"a""b"'),
        ("x; DROP TABLE y; --", '"x; DROP TABLE y; --"'),
        ("MixedCase", '"MixedCase"'),
        ("wörk", '"wörk"'),
        ("é" * 31, '"' + "é" * 31 + '"'),  # 62 bytes
    ],
)
def test_quote_ident_keeps_the_name_exactly(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("name", ["", "a\x00b", "a" * 64, "é" * 32])
def test_quote_ident_refuses_what_postgresql_would_truncate_or_cannot_hold(name: str) -> None:
    with pytest.raises(ValueError, match=r"not an SQL identifier|bytes, over PostgreSQL's 63"):
        quote_ident(name)


def test_quote_table_quotes_schema_and_table_apart() -> None:
    assert quote_table("workspace.workspace_items") == '"workspace"."workspace_items"'
    assert quote_table('s.t.u"v') == '"s"."t.u""v"'
    assert quote_table("bare") == '"bare"'
