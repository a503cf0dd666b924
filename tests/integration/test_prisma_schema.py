"""schemas/prisma/schema.prisma against the catalog of a database `syncd migrate` just built.

Both directions: a table or column on one side only, a type, precision, nullability, default,
primary key or index name that differs, all fail. syncd's internal control tables are the one
deliberate gap, listed in INTERNAL_TABLES so a new table has to be placed on one side or the other.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from syncd.prisma import SCHEMA_FILE, PrismaColumn, PrismaTable, catalog_default, read_schema

# Schemas whose every table the Node services see through Prisma (reporting only holds views).
DOMAIN_SCHEMAS = ("workspace", "documentation", "signals", "syncd")
# syncd's own machinery: never read or written by the Node services' models, so not in schema.prisma.
INTERNAL_TABLES = frozenset(
    {
        ("syncd", "leader"),
        ("syncd", "checkpoints"),
        ("syncd", "outbox"),
        ("syncd", "outbox_consumers"),
        ("syncd", "quarantine"),
        ("syncd", "schema_migrations"),
        # Written by the cutover client (clients/node) over its own node-postgres lock session.
        ("syncd", "cutover_clients"),
        ("syncd", "stream_leases"),
        ("syncd", "members"),
    }
)

# Partitions (tp_capital_signals_pYYYYMM) are syncd's storage detail: only their parent is a model.
_COLUMNS_SQL = """
SELECT c.table_schema, c.table_name, c.column_name, c.udt_name, c.datetime_precision,
       c.is_nullable = 'YES' AS nullable, c.column_default
  FROM information_schema.columns c
  JOIN pg_namespace n ON n.nspname = c.table_schema
  JOIN pg_class k ON k.relnamespace = n.oid AND k.relname = c.table_name
 WHERE c.table_schema = ANY($1::text[]) AND k.relkind IN ('r', 'p') AND NOT k.relispartition
 ORDER BY c.table_schema, c.table_name, c.ordinal_position
"""
_PRIMARY_KEYS_SQL = """
SELECT n.nspname, k.relname, array_agg(a.attname ORDER BY x.ord) AS columns
  FROM pg_constraint p
  JOIN pg_class k ON k.oid = p.conrelid
  JOIN pg_namespace n ON n.oid = k.relnamespace
  CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY x(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum = x.attnum
 WHERE p.contype = 'p' AND n.nspname = ANY($1::text[]) AND NOT k.relispartition
 GROUP BY n.nspname, k.relname
"""
_INDEXES_SQL = """
SELECT n.nspname, t.relname, array_agg(i.relname) AS names
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = ANY($1::text[]) AND NOT x.indisprimary AND NOT t.relispartition
 GROUP BY n.nspname, t.relname
"""


async def catalog_tables(dsn: str) -> dict[tuple[str, str], PrismaTable]:
    """The migrated database's tables in the shape `read_schema` returns (model name left empty)."""
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(_COLUMNS_SQL, list(DOMAIN_SCHEMAS))
        keys = await conn.fetch(_PRIMARY_KEYS_SQL, list(DOMAIN_SCHEMAS))
        indexes = await conn.fetch(_INDEXES_SQL, list(DOMAIN_SCHEMAS))
    finally:
        await conn.close()
    tables: dict[tuple[str, str], PrismaTable] = {}
    for r in columns:
        table = tables.setdefault((r["table_schema"], r["table_name"]), PrismaTable("", *_key(r)))
        table.columns[r["column_name"]] = _catalog_column(r)
    for r in keys:
        tables[(r["nspname"], r["relname"])].primary_key = tuple(r["columns"])
    for r in indexes:
        tables[(r["nspname"], r["relname"])].indexes = frozenset(r["names"])
    return {k: v for k, v in tables.items() if k not in INTERNAL_TABLES}


def _key(row: asyncpg.Record) -> tuple[str, str]:
    return row["table_schema"], row["table_name"]


def _catalog_column(row: asyncpg.Record) -> PrismaColumn:
    is_timestamp = row["udt_name"] in ("timestamptz", "timestamp")
    return PrismaColumn(
        name=row["column_name"],
        udt_name=row["udt_name"],
        precision=row["datetime_precision"] if is_timestamp else None,
        nullable=row["nullable"],
        default=catalog_default(row["column_default"]),
    )


def differences(prisma: dict[tuple[str, str], PrismaTable], db: dict[tuple[str, str], PrismaTable]) -> list[str]:
    """Every mismatch between the two descriptions, as readable lines (empty when they agree)."""
    problems = [f"table {'.'.join(k)} is in the database only" for k in sorted(db.keys() - prisma.keys())]
    problems += [f"model for {'.'.join(k)} has no table" for k in sorted(prisma.keys() - db.keys())]
    for key in sorted(db.keys() & prisma.keys()):
        problems += _table_differences(".".join(key), prisma[key], db[key])
    return problems


def _table_differences(name: str, prisma: PrismaTable, db: PrismaTable) -> list[str]:
    problems = [f"column {name}.{c} is in the database only" for c in db.columns if c not in prisma.columns]
    problems += [f"field for {name}.{c} has no column" for c in prisma.columns if c not in db.columns]
    for column in db.columns.keys() & prisma.columns.keys():
        if prisma.columns[column] != db.columns[column]:
            problems.append(f"{name}.{column}: prisma {prisma.columns[column]} != database {db.columns[column]}")
    if prisma.primary_key != db.primary_key:
        problems.append(f"{name}: primary key prisma {prisma.primary_key} != database {db.primary_key}")
    if prisma.indexes != db.indexes:
        problems.append(f"{name}: indexes prisma {sorted(prisma.indexes)} != database {sorted(db.indexes)}")
    return problems


async def test_prisma_schema_matches_migrated_database(dsn: str) -> None:
    """schema.prisma describes exactly the tables and columns `syncd migrate` creates."""
    problems = differences(read_schema(), await catalog_tables(dsn))
    assert problems == [], "schema.prisma differs from syncd/migrations:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "title       String    @db.Text\n  description String?   @db.Text\n  /// Matches ^[a-z0-9-]{1,100}$.",
            "title       String?   @db.Text\n  description String?   @db.Text\n  /// Matches ^[a-z0-9-]{1,100}$.",
            "workspace.workspace_items.title",
        ),
        (
            '@map("updated_at") @db.Timestamptz(3)\n  createdBy',
            '@map("updated_at") @db.Timestamptz(6)\n  createdBy',
            "workspace.workspace_items.updated_at",
        ),
        (
            "  port        Int?                @db.Integer\n",
            "  port        BigInt?             @db.BigInt\n",
            "documentation.documentation_systems.port",
        ),
        ("  origin        String   @db.Text\n", "", "syncd.audit_log.origin is in the database only"),
        (
            "  stop        Float?    @db.DoublePrecision\n",
            '  stop        Float?    @db.DoublePrecision\n  stopLoss    Float?    @map("stop_loss")\n',
            "field for signals.tp_capital_signals.stop_loss has no column",
        ),
        (
            'mode         String   @default("mirror")',
            'mode         String   @default("retired")',
            "syncd.cutover.mode",
        ),
        ('@@map("telegram_bots")', '@@map("telegram_bot")', "signals.telegram_bots is in the database only"),
        ("name         String   @id @db.Text", "name         String   @db.Text", "syncd.cutover: primary key"),
        ('map: "audit_log_at_idx"', 'map: "audit_log_when_idx"', "syncd.audit_log: indexes"),
    ],
    ids=[
        "nullability",
        "precision",
        "type",
        "missing-field",
        "extra-field",
        "default",
        "table",
        "primary-key",
        "index",
    ],
)
async def test_parity_check_catches_a_broken_schema(
    dsn: str, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """The comparison is not vacuous: one edited field or model makes it report that difference."""
    original = SCHEMA_FILE.read_text(encoding="utf-8")
    assert original.count(old) == 1, f"fixture text not found once in schema.prisma: {old!r}"
    broken = tmp_path / "schema.prisma"
    broken.write_text(original.replace(old, new), encoding="utf-8")
    problems = differences(read_schema(broken), await catalog_tables(dsn))
    assert any(expected in p for p in problems), problems
