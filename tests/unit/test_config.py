"""Config: one typed object, env overrides, errors that name the key and its origin."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import Config, parse_duration
from syncd.errors import ConfigError

DSN = "postgresql://syncd:s3cret-pw@db.internal:5432/tradingsystem"


def write(tmp_path: Path, text: str) -> Path:
    """A config file with `text`."""
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("raw", "seconds"), [("250ms", 0.25), ("1s", 1.0), ("5m", 300.0), ("2h", 7200.0), ("1.5", 1.5), (3, 3.0)]
)
def test_durations(raw: object, seconds: float) -> None:
    """Durations accept ms/s/m/h suffixes and bare numbers."""
    assert parse_duration(raw) == seconds


def test_missing_dsn_names_the_key_and_the_env_names() -> None:
    """Without any DSN the error points at postgres.dsn and the variables that can set it."""
    with pytest.raises(ConfigError) as info:
        Config.load(None, {})
    assert info.value.key == "postgres.dsn"
    assert "SYNCD_PG_DSN" in str(info.value)


def test_env_overrides_file_and_says_where_a_bad_value_came_from(tmp_path: Path) -> None:
    """An env value wins over the file; a bad env value is reported with the variable's name."""
    path = write(tmp_path, f'[postgres]\ndsn = "{DSN}"\n[daemon]\nstop_timeout = "3s"\n')
    assert Config.load(path, {"SYNCD_DAEMON_STOP_TIMEOUT": "7s"}).daemon.stop_timeout == 7.0
    with pytest.raises(ConfigError) as info:
        Config.load(path, {"SYNCD_DAEMON_STOP_TIMEOUT": "soon"})
    assert (info.value.key, info.value.origin) == ("daemon.stop_timeout", "env SYNCD_DAEMON_STOP_TIMEOUT")


def test_database_url_and_syncd_pg_dsn(tmp_path: Path) -> None:
    """SYNCD_PG_DSN takes precedence over DATABASE_URL, both over the file."""
    path = write(tmp_path, '[postgres]\ndsn = "postgresql://file/db"\n')
    assert Config.load(path, {"DATABASE_URL": "postgresql://url/db"}).postgres.dsn.get_secret_value() == (
        "postgresql://url/db"
    )
    both = {"DATABASE_URL": "postgresql://url/db", "SYNCD_PG_DSN": "postgresql://syncd/db"}
    assert Config.load(path, both).postgres.dsn.get_secret_value() == "postgresql://syncd/db"


def test_questdb_env_tunes_but_never_enables(tmp_path: Path) -> None:
    """QUESTDB_* from an upstream env file does not start a QuestDB stream on its own."""
    env = {"SYNCD_PG_DSN": DSN, "QUESTDB_HOST": "data-questdb", "QUESTDB_HTTP_PORT": "9002"}
    assert Config.load(None, env).questdb is None
    path = write(tmp_path, "[questdb]\n")
    questdb = Config.load(path, env).questdb
    assert questdb is not None
    assert (questdb.host, questdb.http_port) == ("data-questdb", 9002)


def test_questdb_precedence_syncd_env_over_upstream_env_over_file(tmp_path: Path) -> None:
    """Per key: SYNCD_QUESTDB_<KEY>, else upstream's QUESTDB_<KEY>, else the file, else the default."""
    path = write(tmp_path, '[questdb]\nhost = "file-host"\nhttp_port = 9100\nuser = "file-user"\npg_port = 8900\n')
    env = {"SYNCD_PG_DSN": DSN, "QUESTDB_HOST": "data-questdb", "QUESTDB_HTTP_PORT": "9002",
           "SYNCD_QUESTDB_HTTP_PORT": "9555", "QUESTDB_PASSWORD": "upstream-pw"}
    questdb = Config.load(path, env).questdb
    assert questdb is not None
    assert (questdb.host, questdb.http_port, questdb.user, questdb.pg_port) == ("data-questdb", 9555, "file-user", 8900)
    assert questdb.password.get_secret_value() == "upstream-pw"
    with pytest.raises(ConfigError) as info:
        Config.load(path, {**env, "QUESTDB_PG_PORT": "eight"})
    assert (info.value.key, info.value.origin) == ("questdb.pg_port", "env QUESTDB_PG_PORT")
    # The stronger name's value is the one validated: a bad upstream value it overrides is not read.
    assert Config.load(path, {**env, "QUESTDB_PG_PORT": "eight", "SYNCD_QUESTDB_PG_PORT": "8813"}).questdb


def test_questdb_enabled_from_syncd_env_still_reads_upstream_names() -> None:
    """A [questdb] section made by SYNCD_QUESTDB_* alone (no file section) takes upstream's
    QUESTDB_* too: the names are applied after the section is known to exist, not in list order."""
    env = {"SYNCD_PG_DSN": DSN, "SYNCD_QUESTDB_TABLES": "tp_capital_signals, telegram_bots",
           "QUESTDB_HOST": "data-questdb", "QUESTDB_PASSWORD": "upstream-pw", "QUESTDB_PG_PORT": "8813"}
    questdb = Config.load(None, env).questdb
    assert questdb is not None
    assert (questdb.host, questdb.pg_port, questdb.tables) == ("data-questdb", 8813,
                                                               ("tp_capital_signals", "telegram_bots"))
    assert questdb.password.get_secret_value() == "upstream-pw"


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    """A typo in the file is an error naming the key, not a silently ignored setting."""
    path = write(tmp_path, f'[postgres]\ndsn = "{DSN}"\n[http]\nlisten_on = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError) as info:
        Config.load(path, {})
    assert info.value.key == "http.listen_on"
    assert info.value.origin == str(path)


def test_relative_lowdb_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    """`path = "db.json"` next to the config file resolves there, wherever syncd is started."""
    lowdb = '[[lowdb]]\nname = "ws"\npath = "db.json"\nlayout = "workspace"\n'
    path = write(tmp_path, f'[postgres]\ndsn = "{DSN}"\n{lowdb}')
    assert Config.load(path, {}).lowdb[0].path == tmp_path / "db.json"


def test_secrets_never_in_repr_or_errors(tmp_path: Path) -> None:
    """Passwords stay out of repr(config) and out of validation errors about them."""
    config = Config.load(None, {"SYNCD_PG_DSN": DSN, "SYNCD_QUESTDB_PASSWORD": "qdb-pw"})
    assert "s3cret-pw" not in repr(config)
    assert "qdb-pw" not in repr(config)
    with pytest.raises(ConfigError) as info:
        Config.load(None, {"SYNCD_PG_DSN": DSN, "SYNCD_POSTGRES_POOL_SIZE": "1"})
    assert "s3cret-pw" not in str(info.value)
