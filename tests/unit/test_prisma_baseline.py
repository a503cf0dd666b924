"""The Prisma baseline (schemas/prisma/migrations/0_init) must equal the SQL migrations it is built from."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.migrate import discover
from syncd.prisma import BASELINE_FILE, PRISMA_DIR, baseline_sql, catalog_default, read_schema, write_baseline


def test_baseline_is_up_to_date() -> None:
    """Adding or editing syncd/migrations/*.sql without `python -m syncd.prisma` fails here."""
    assert BASELINE_FILE.read_text(encoding="utf-8") == baseline_sql(), (
        "schemas/prisma/migrations/0_init/migration.sql is stale: run `python -m syncd.prisma`"
    )


def test_baseline_holds_every_migration_in_apply_order() -> None:
    """Each file appears whole, in the order `syncd migrate` applies them."""
    text = baseline_sql()
    positions = []
    for migration in discover():
        body = migration.path.read_text(encoding="utf-8").rstrip()
        assert body in text, migration.path.name
        positions.append(text.index(f"-- ==== {migration.path.name} ===="))
    assert positions == sorted(positions)


def test_baseline_detects_a_new_migration(tmp_path: Path) -> None:
    """A migration added after the baseline was written makes it stale."""
    for migration in discover():
        (tmp_path / migration.path.name).write_bytes(migration.path.read_bytes())
    (tmp_path / "9999_new.sql").write_text("CREATE TABLE syncd.new_thing (id int);\n", encoding="utf-8")
    assert baseline_sql(discover(tmp_path)) != BASELINE_FILE.read_text(encoding="utf-8")


def test_write_baseline_reports_changes(tmp_path: Path) -> None:
    """Writing twice changes the file once."""
    target = tmp_path / "0_init" / "migration.sql"
    assert write_baseline(target) is True
    assert write_baseline(target) is False
    assert target.read_text(encoding="utf-8") == baseline_sql()


def test_migration_lock_names_postgresql() -> None:
    """Prisma refuses a migration history whose lock file names another provider."""
    lock = (PRISMA_DIR / "migrations" / "migration_lock.toml").read_text(encoding="utf-8")
    assert 'provider = "postgresql"' in lock


def _schema(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "schema.prisma"
    path.write_text(f'model M {{\n{body}\n  @@map("m")\n  @@schema("s")\n}}\n', encoding="utf-8")
    return path


def test_reader_describes_fields_as_the_catalog_does(tmp_path: Path) -> None:
    """Mapped names, native types, lists, optionality and defaults in information_schema terms."""
    path = _schema(
        tmp_path,
        "  id BigInt @id @default(autoincrement())\n"
        "  tags String[] @default([]) @db.Text\n"
        '  at DateTime? @map("changed_at") @db.Timestamptz(3) /// when\n'
        '  hash Bytes @default("AQI=") @map("row_hash") @db.ByteA\n'
        '  who String @default(dbgenerated("CURRENT_USER"))\n'
        '  note String @default("it\'s")\n'
        "  parentId String?\n"
        "  parent Other? @relation(fields: [parentId], references: [id])\n"
        "  children Other[]",
    )
    table = read_schema(path)[("s", "m")]
    assert table.primary_key == ("id",)
    assert [(c.name, c.udt_name, c.precision, c.nullable, c.default) for c in table.columns.values()] == [
        ("id", "int8", None, False, "autoincrement()"),
        ("tags", "_text", None, False, "'{}'::text[]"),
        ("changed_at", "timestamptz", 3, True, None),
        ("row_hash", "bytea", None, False, "'\\x0102'::bytea"),
        ("who", "text", None, False, "CURRENT_USER"),
        ("note", "text", None, False, "'it''s'::text"),
        ("parentId", "text", None, True, None),  # relation fields are no columns; their scalar is
    ]
    assert catalog_default("nextval('s.m_id_seq'::regclass)") == "autoincrement()"


@pytest.mark.parametrize(
    "body",
    ["  at DateTime @id @db.Timestamptz", "  id String @id @db.Money"],
    ids=["implicit-precision", "unknown-native-type"],
)
def test_reader_refuses_what_it_cannot_compare(tmp_path: Path, body: str) -> None:
    """Anything the parity test could not check exactly is an error, not silently skipped."""
    with pytest.raises(ValueError, match="model M"):
        read_schema(_schema(tmp_path, body))
