"""Builds the configured sources: one per LowDB file, one per QuestDB table."""

from __future__ import annotations

import asyncpg

from syncd.config import Config
from syncd.errors import ConfigError
from syncd.source import Source


def build_sources(config: Config, pool: asyncpg.Pool | None = None, *, lowdb: bool = True) -> list[Source]:
    """Instantiate every source the config names, in config order (LowDB ones unless `lowdb` is False).

    `pool` (optional) is shared by the LowDB sources for their read-only queries (start-up row
    hashes, held quarantine keys); without it each LowDB source opens one connection of its own.
    The daemon starts LowDB sources itself, per file, in the file's cutover mode.
    """
    sources: list[Source] = []
    dsn = config.postgres.dsn.get_secret_value()
    if config.lowdb:
        check_lowdb_targets(config)
    if config.lowdb and lowdb:
        from syncd.lowdb.source import LowdbSource

        sources.extend(LowdbSource(entry, pool=pool, dsn=dsn) for entry in config.lowdb)
    if config.questdb is not None:
        from syncd.questdb.source import build_questdb_sources

        # The signals stream reads PostgreSQL (never writes it) for the nightly reconcile.
        sources.extend(build_questdb_sources(config.questdb, dsn))
    return sources


def stream_names(config: Config) -> list[str]:
    """Every stream the config names, each a unit of ownership: LowDB files, QuestDB tables, the relay."""
    from syncd.questdb.source import stream_name
    from syncd.relay import STREAM as RELAY_STREAM

    names = [entry.name for entry in config.lowdb]
    if config.questdb is not None:
        names += [stream_name(table) for table in config.questdb.tables]
    return names + ([RELAY_STREAM] if config.kafka is not None else [])


def build_questdb_stream(config: Config, stream: str) -> Source:
    """The source of one QuestDB stream (`questdb:<table>`), for the instance that owns it."""
    from syncd.questdb.source import build_questdb_sources, stream_name

    assert config.questdb is not None
    (table,) = [t for t in config.questdb.tables if stream_name(t) == stream]
    (source,) = build_questdb_sources(
        config.questdb.model_copy(update={"tables": (table,)}), config.postgres.dsn.get_secret_value()
    )
    return source


def check_lowdb_targets(config: Config) -> None:
    """Two LowDB files must never write the same table (or generic collection): they would fight."""
    from syncd.tables import specs_for_layout

    owners: dict[tuple[str, str], str] = {}
    names: set[str] = set()
    for i, entry in enumerate(config.lowdb):
        if entry.name in names:
            raise ConfigError(f"lowdb[{i}].name", "config", f"duplicate stream name {entry.name!r}")
        names.add(entry.name)
        if entry.layout == "generic" and not entry.collections:
            raise ConfigError(f"lowdb[{i}].collections", "config", "layout generic needs at least one collection")
        for spec in specs_for_layout(entry.layout, entry.collections):
            target = (spec.table, spec.collection if spec.document else "")
            if target in owners:
                raise ConfigError(
                    f"lowdb[{i}]", "config", f"{entry.name} and {owners[target]} both write {'/'.join(target)}"
                )
            owners[target] = entry.name
