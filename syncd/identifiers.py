"""SQL identifiers: the one place a name becomes part of a statement, and the rule for config names.

asyncpg binds values, never identifiers, so a table or column name is put into the SQL text. Every
such name goes through `quote_ident` / `quote_table`: double quotes, an embedded quote doubled,
case and any Unicode kept, and a name PostgreSQL would silently truncate (over 63 bytes) or cannot
hold (NUL, empty) refused. Names are syncd's own (table specs, temp stages) or come from the
catalog; names from the config are checked at load by `config_name`, which is stricter than SQL
needs, so a hostile name never gets as far as a statement.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL's NAMEDATALEN - 1: a longer identifier is truncated without an error."""
_CONFIG_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def quote_ident(name: str) -> str:
    """`name` as one quoted PostgreSQL identifier; ValueError for one PostgreSQL cannot hold as is."""
    if not name or "\x00" in name:
        raise ValueError(f"not an SQL identifier: {name!r}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"identifier {name[:20]!r}… is {size} bytes, over PostgreSQL's {MAX_IDENTIFIER_BYTES}")
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """A `schema.table` name (or a bare one) quoted part by part: `"workspace"."workspace_items"`."""
    schema, name = split_table(table)
    return quote_ident(name) if schema is None else f"{quote_ident(schema)}.{quote_ident(name)}"


def split_table(table: str) -> tuple[str | None, str]:
    """`schema.table` as (schema, table) at the first dot (a table's own name may hold dots);
    (None, name) for a bare name."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (None, table)


def config_name(value: str) -> str:
    """A LowDB entry's name (a stream, a cutover unit): lowercase ASCII letters, digits, `_` and
    `-`, starting with a letter, at most 63 bytes; ValueError saying so."""
    return _checked(value, _CONFIG_NAME, "lowercase letters, digits, _ and -, starting with a letter")


def collection_name(value: str) -> str:
    """A generic collection's name (the file's top-level key, case kept): ASCII letters, digits,
    `_` and `-`, not starting with a digit or `-`, at most 63 bytes; ValueError saying so."""
    return _checked(value, _COLLECTION_NAME, "ASCII letters, digits, _ and -, not starting with a digit or -")


def _checked(value: str, pattern: re.Pattern[str], rule: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES or not pattern.fullmatch(value):
        raise ValueError(f"not a name: use {rule}, at most {MAX_IDENTIFIER_BYTES} bytes")
    return value
