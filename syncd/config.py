"""The one typed configuration object: TOML file plus environment overrides, validated at start."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, SecretStr, ValidationError

from syncd.errors import ConfigError
from syncd.identifiers import collection_name, config_name
from syncd.poison import MAX_RECORD_BYTES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Turn `250ms`, `1s`, `5m`, `2h` or a bare number of seconds into seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 1s, 5m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def _comma_list(value: object) -> object:
    """`a, b` (an environment variable) as `["a", "b"]`; a TOML array passes as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


QuestdbTable = Literal["tp_capital_signals", "telegram_bots", "telegram_channels"]
"""The QuestDB tables syncd has specs for: the only names its QuestDB SQL is built from."""
QuestdbTables = Annotated[tuple[QuestdbTable, ...], BeforeValidator(_comma_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSettings(_Section):
    """Where syncd writes."""

    dsn: SecretStr
    pool_size: int = Field(default=4, ge=2, le=64)
    connect_timeout: Seconds = 5.0
    """Also bounds waiting for a pooled connection."""
    command_timeout: Seconds = Field(default=60.0, gt=0)
    """Longest any one statement of the daemon may take: no wait on PostgreSQL is unbounded."""


class HttpSettings(_Section):
    """The health/metrics/status endpoint."""

    listen: str = Field(default="127.0.0.1:9187", pattern=r"^[^:]*:\d{1,5}$")

    @property
    def host(self) -> str:
        """Host part of `listen`."""
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """Port part of `listen` (0 = any free port)."""
        return int(self.listen.rsplit(":", 1)[1])


class DaemonSettings(_Section):
    """Lifecycle and leadership."""

    stop_timeout: Seconds = 10.0
    standby_poll: Seconds = 1.0
    instance: str = ""
    notify_socket: str | None = None
    """systemd's NOTIFY_SOCKET (set by the unit, Type=notify)."""
    watchdog_usec: int | None = Field(default=None, ge=0)
    """systemd's WATCHDOG_USEC: ping at half this interval."""
    verify_interval: Seconds = 300.0
    """Periodic LowDB parity check feeding syncd_verify_mismatch_rows (0 turns it off)."""
    stall_timeout: Seconds = Field(default=120.0, gt=0)
    """A stream whose source has changes but that committed nothing for this long is failed and
    restarted by the supervisor (the progress watchdog); keep it above the longest first snapshot."""
    restart_backoff_max: Seconds = Field(default=30.0, gt=0)
    """Cap of the supervisor's jittered exponential backoff between restarts of a failing stream."""


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not an IANA time zone: {name!r} (e.g. UTC, America/Sao_Paulo)") from None
    return name


Layout = Literal["workspace", "documentation", "ideas-mvp", "generic"]


# Names from the config that reach SQL (as bound values: stream, cutover unit, collection) are
# checked at load, stricter than SQL needs; SQL identifiers are syncd's own, quoted by
# syncd.identifiers, and QuestDB tables are one of the known ones (`QuestdbTable`).
EntryName = Annotated[str, AfterValidator(config_name)]
CollectionName = Annotated[str, AfterValidator(collection_name)]


class CollectionSettings(_Section):
    """An extra collection of a `generic` LowDB file, stored as key + jsonb document."""

    name: CollectionName
    key: str = Field(default="id", min_length=1)


class LowdbSettings(_Section):
    """One LowDB file: one stream and one cutover unit."""

    name: EntryName
    path: Path
    layout: Layout
    collections: tuple[CollectionSettings, ...] = ()
    debounce: Seconds = 0.02
    poll_interval: Seconds | None = None
    """Stat the directory at this interval instead of inotify: for network volumes (NFS, a
    ReadWriteMany PVC) whose writers run on another host, where inotify sees nothing."""
    mass_delete_ratio: float = Field(default=0.5, gt=0, le=1)
    mass_delete_min: int = Field(default=10, ge=0)
    max_record_size: ByteSize = Field(default=ByteSize(MAX_RECORD_BYTES), gt=0)
    """A record whose text is longer is quarantined unparsed (`64MiB`, `512KiB` or bytes)."""
    timezone: Annotated[str, AfterValidator(_known_zone)] = "UTC"
    """The zone a timestamp without one is read in: the Node service's TZ (JavaScript parses
    `2025-11-04 10:00:00` as local time). IANA name, e.g. `America/Sao_Paulo`."""

    @property
    def zone(self) -> tzinfo:
        """`timezone` as a tzinfo."""
        return ZoneInfo(self.timezone)


class QuestdbSettings(_Section):
    """The QuestDB source; absent means no QuestDB stream runs."""

    host: str = "127.0.0.1"
    http_port: int = Field(default=9000, ge=1, le=65535)
    pg_port: int = Field(default=8812, ge=1, le=65535)
    user: str = "admin"
    password: SecretStr = SecretStr("quest")
    transport: Literal["http", "pg"] = "http"
    tables: QuestdbTables = ("tp_capital_signals", "telegram_bots", "telegram_channels")
    poll_interval: Seconds = 1.0
    safety_lag: Seconds = 2.0
    lag_window: Seconds = 600.0
    rescan_interval: Seconds = 30.0
    page_size: int = Field(default=10_000, ge=1)
    connect_timeout: Seconds = Field(default=2.0, gt=0)
    """Opening a connection: TCP connect, and over PG wire the startup and authentication too."""
    request_timeout: Seconds = Field(default=5.0, gt=0)
    """One query (the command timeout): over HTTP the longest silence while waiting for or reading
    an answer, over PG wire the whole query. A server that accepts and never answers costs this."""
    reconcile_at: str = Field(default="02:30", pattern=r"^\d{2}:\d{2}$")
    reconcile_days: int = Field(default=7, ge=1)
    """Closed days (before today, source clock) compared by the nightly reconcile."""


class KafkaSettings(_Section):
    """The outbox relay to Kafka; absent means no relay runs."""

    bootstrap_servers: str = Field(pattern=r"^[^,\s]+:\d{1,5}(,[^,\s]+:\d{1,5})*$")
    """Comma-separated `host:port` list."""
    topic_prefix: str = Field(default="syncd", pattern=r"^[A-Za-z0-9._-]+$")
    """Topic of a table: `<prefix>.<schema>.<table>`."""
    consumer: str = Field(default="kafka-relay", min_length=1)
    """The relay's name in syncd.outbox_consumers (its acknowledged position)."""
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    """Used when the relay creates a missing topic (compacted, so a topic can rebuild its table)."""
    snapshot: bool = True
    """Publish every tracked table's rows (op `r`) when the relay first registers."""
    tombstones: bool = True
    """After a delete, a null value for the key, so compaction can drop the key."""
    batch_size: int = Field(default=5000, ge=1)
    poll_interval: Seconds = 0.2
    request_timeout: Seconds = 30.0


class Config(_Section):
    """Everything syncd is told, validated before any I/O."""

    postgres: PostgresSettings
    http: HttpSettings = HttpSettings()
    daemon: DaemonSettings = DaemonSettings()
    lowdb: tuple[LowdbSettings, ...] = ()
    questdb: QuestdbSettings | None = None
    kafka: KafkaSettings | None = None

    @classmethod
    def load(cls, path: Path | None, environ: Mapping[str, str]) -> Config:
        """Read `path` (TOML), apply environment overrides, validate; errors name key and origin."""
        raw, origins = _read_toml(path)
        _apply_env(raw, origins, environ)
        raw.setdefault("postgres", {})  # so a missing DSN is reported as postgres.dsn
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise _first_error(exc, origins, path) from None


# Environment over the file (12-factor), and per key the most specific name wins:
# SYNCD_<SECTION>_<KEY> over the names other software already uses (upstream's QUESTDB_*,
# DATABASE_URL, systemd's). Each tuple lists a key's names from weakest to strongest.
_ENV_ALIASES: tuple[tuple[str, tuple[str, str]], ...] = (
    ("DATABASE_URL", ("postgres", "dsn")),
    ("SYNCD_PG_DSN", ("postgres", "dsn")),
    ("QUESTDB_HOST", ("questdb", "host")),
    ("QUESTDB_HTTP_PORT", ("questdb", "http_port")),
    ("QUESTDB_PG_PORT", ("questdb", "pg_port")),
    ("QUESTDB_USER", ("questdb", "user")),
    ("QUESTDB_PASSWORD", ("questdb", "password")),
    ("NOTIFY_SOCKET", ("daemon", "notify_socket")),
    ("WATCHDOG_USEC", ("daemon", "watchdog_usec")),
)
_SECTIONS: dict[str, type[_Section]] = {
    "postgres": PostgresSettings,
    "http": HttpSettings,
    "daemon": DaemonSettings,
    "questdb": QuestdbSettings,
    "kafka": KafkaSettings,
}


def _read_toml(path: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    if path is None:
        return {}, {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", str(path), exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", str(path), f"not valid TOML: {exc}") from None
    base = path.parent
    for entry in raw.get("lowdb", []):
        # Relative LowDB paths are relative to the config file, not to the working directory.
        if isinstance(entry, dict) and "path" in entry and not Path(entry["path"]).is_absolute():
            entry["path"] = str(base / entry["path"])
    return raw, {}


def _apply_env(raw: dict[str, Any], origins: dict[str, str], environ: Mapping[str, str]) -> None:
    overrides = list(_ENV_ALIASES)
    for section, model in _SECTIONS.items():
        overrides += [(f"SYNCD_{section}_{k}".upper(), (section, k)) for k in model.model_fields]
    # QUESTDB_* is set in every upstream service's env: it tunes the source, never enables it. The
    # file's [questdb] or any SYNCD_QUESTDB_* enables it, whatever order the names are applied in.
    questdb = "questdb" in raw or any(name.startswith("SYNCD_QUESTDB_") for name in environ)
    for env_name, (section, key) in overrides:  # weakest first: a stronger name overwrites
        if env_name not in environ or (section == "questdb" and not questdb):
            continue
        raw.setdefault(section, {})[key] = environ[env_name]
        origins[f"{section}.{key}"] = f"env {env_name}"


def _first_error(exc: ValidationError, origins: Mapping[str, str], path: Path | None) -> ConfigError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(root)"
    # `questdb.tables.1` came from where `questdb.tables` did.
    parts = key.split(".")
    found = (origins.get(".".join(parts[:n])) for n in range(len(parts), 0, -1))
    origin = next((o for o in found if o is not None), str(path) if path else "defaults")
    reason = error["msg"].removeprefix("Value error, ")  # a validator's own message says it all
    if key == "postgres.dsn" and error["type"] == "missing":
        reason = "missing: set [postgres] dsn, SYNCD_PG_DSN or DATABASE_URL"
    elif "input" in error and not any(s in key for s in ("dsn", "password")):
        reason += f", got {error['input']!r}"
    return ConfigError(key, origin, reason)
