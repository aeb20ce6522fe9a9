"""Migrations against a real PostgreSQL (a fresh database per test, from the devstack plugin)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest

from modelhub_common.errors import DependencyError
from modelhub_common.migrations import (
    COMMON_MIGRATIONS,
    MigrationChecksumError,
    MigrationError,
    MigrationSource,
    migrate,
    migration_status,
)

# The common source's own files (the outbox tables), applied before any service's.
COMMON = [m.name for m in COMMON_MIGRATIONS.load()]


class SqlPackage:
    """An importable package on ``sys.path`` holding a ``migrations/`` directory the test writes to."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name / "migrations"
        self.dir.mkdir(parents=True)
        (root / name / "__init__.py").write_text("")

    def write(self, filename: str, sql: str) -> None:
        (self.dir / filename).write_text(sql)

    def source(self, name: str = "svc") -> MigrationSource:
        return MigrationSource(name=name, package=self.name, directory="migrations")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlPackage:
    monkeypatch.syspath_prepend(str(tmp_path))
    return SqlPackage(tmp_path, f"migtest_{uuid.uuid4().hex[:12]}")


async def fetch_all(url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(query)
        return await cursor.fetchall()


async def table_exists(url: str, table: str) -> bool:
    rows = await fetch_all(url, f"SELECT to_regclass('{table}') IS NOT NULL")
    return rows[0][0] is True


async def test_applies_common_then_service_migrations_in_order(pg_url: str, package: SqlPackage) -> None:
    package.write("0002_add_label.sql", "ALTER TABLE widgets ADD COLUMN label text NOT NULL DEFAULT '';\n")
    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint PRIMARY KEY);\nCREATE INDEX ON widgets (id);\n")
    package.write("README.md", "not a migration")

    applied = await migrate(pg_url, [COMMON_MIGRATIONS, package.source()])

    assert applied == [*COMMON, "svc/0001_widgets.sql", "svc/0002_add_label.sql"]
    rows = await fetch_all(pg_url, "SELECT name, length(checksum), applied_at IS NOT NULL FROM schema_migrations")
    assert sorted(rows) == sorted((name, 64, True) for name in applied)
    columns = await fetch_all(
        pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'widgets' ORDER BY 1"
    )
    assert columns == [("id",), ("label",)]


async def test_second_run_applies_nothing_and_a_new_file_only(pg_url: str, package: SqlPackage) -> None:
    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint PRIMARY KEY);")
    sources = [COMMON_MIGRATIONS, package.source()]
    assert len(await migrate(pg_url, sources)) == len(COMMON) + 1

    assert await migrate(pg_url, sources) == []

    package.write("0002_gadgets.sql", "CREATE TABLE gadgets (id bigint PRIMARY KEY);")
    assert await migrate(pg_url, sources) == ["svc/0002_gadgets.sql"]


async def test_outbox_table_has_the_expected_shape(pg_url: str) -> None:
    await migrate(pg_url, [COMMON_MIGRATIONS])

    columns = await fetch_all(
        pg_url,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = 'outbox' ORDER BY ordinal_position",
    )
    assert columns == [
        ("id", "bigint", "NO"),
        ("subject", "text", "NO"),
        ("payload", "bytea", "NO"),
        ("headers", "jsonb", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("published_at", "timestamp with time zone", "YES"),
        ("trace_context", "jsonb", "YES"),
    ]
    indexes = await fetch_all(pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_unpublished_idx'")
    assert len(indexes) == 1
    assert "WHERE (published_at IS NULL)" in str(indexes[0][0])


async def test_refuses_when_an_applied_file_changed(pg_url: str, package: SqlPackage) -> None:
    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint PRIMARY KEY);")
    await migrate(pg_url, [package.source()])
    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint PRIMARY KEY, extra text);")
    package.write("0002_gadgets.sql", "CREATE TABLE gadgets (id bigint PRIMARY KEY);")

    with pytest.raises(MigrationChecksumError, match="svc/0001_widgets.sql") as caught:
        await migrate(pg_url, [package.source()])

    assert caught.value.code == "migration_checksum_mismatch"
    assert not await table_exists(pg_url, "gadgets"), "nothing runs once a checksum mismatch is found"
    statuses = {s.name: s.state for s in await migration_status(pg_url, [package.source()])}
    assert statuses == {"svc/0001_widgets.sql": "changed", "svc/0002_gadgets.sql": "pending"}


async def test_line_ending_changes_do_not_change_the_checksum(pg_url: str, package: SqlPackage) -> None:
    (package.dir / "0001_widgets.sql").write_bytes(b"CREATE TABLE widgets (id bigint);\n-- done\n")
    await migrate(pg_url, [package.source()])
    (package.dir / "0001_widgets.sql").write_bytes(b"CREATE TABLE widgets (id bigint);\r\n-- done\r\n")

    assert await migrate(pg_url, [package.source()]) == []


async def test_a_failing_file_is_rolled_back_and_earlier_ones_stay(pg_url: str, package: SqlPackage) -> None:
    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint PRIMARY KEY);")
    package.write("0002_broken.sql", "CREATE TABLE gadgets (id bigint);\nSELECT no_such_function();\n")
    package.write("0003_later.sql", "CREATE TABLE later (id bigint);")

    with pytest.raises(MigrationError, match="svc/0002_broken.sql"):
        await migrate(pg_url, [package.source()])

    assert await table_exists(pg_url, "widgets")
    assert not await table_exists(pg_url, "gadgets"), "the failing file's transaction was rolled back"
    assert not await table_exists(pg_url, "later")
    names = await fetch_all(pg_url, "SELECT name FROM schema_migrations")
    assert names == [("svc/0001_widgets.sql",)]


async def test_sql_with_percent_signs_and_several_statements(pg_url: str, package: SqlPackage) -> None:
    package.write(
        "0001_percent.sql",
        "CREATE TABLE notes (body text);\n-- 100% literal, no placeholders: %s %(x)s\n"
        "INSERT INTO notes VALUES ('50% off'), ('%s');\n",
    )
    await migrate(pg_url, [package.source()])
    assert await fetch_all(pg_url, "SELECT body FROM notes ORDER BY body") == [("%s",), ("50% off",)]


async def test_concurrent_runners_apply_each_file_once(pg_url: str, package: SqlPackage) -> None:
    # CREATE TABLE without IF NOT EXISTS fails if a file ever runs twice; pg_sleep widens the race window.
    package.write("0001_first.sql", "SELECT pg_sleep(0.2);\nCREATE TABLE first (id bigint);")
    package.write("0002_second.sql", "CREATE TABLE second (id bigint);")
    sources = [COMMON_MIGRATIONS, package.source()]

    results = await asyncio.gather(*(migrate(pg_url, sources) for _ in range(4)))

    applied = [name for result in results for name in result]
    assert sorted(applied) == [*COMMON, "svc/0001_first.sql", "svc/0002_second.sql"]
    assert [result for result in results if result] == [[*COMMON, "svc/0001_first.sql", "svc/0002_second.sql"]], (
        "one runner applied everything, in order; the others found nothing left"
    )


async def test_status_lists_applied_pending_and_missing(pg_url: str, package: SqlPackage) -> None:
    assert [s.state for s in await migration_status(pg_url, [COMMON_MIGRATIONS])] == ["pending"] * len(COMMON)

    package.write("0001_widgets.sql", "CREATE TABLE widgets (id bigint);")
    package.write("0002_gadgets.sql", "CREATE TABLE gadgets (id bigint);")
    await migrate(pg_url, [COMMON_MIGRATIONS, package.source()])
    (package.dir / "0002_gadgets.sql").unlink()
    package.write("0003_later.sql", "CREATE TABLE later (id bigint);")

    statuses = await migration_status(pg_url, [COMMON_MIGRATIONS, package.source()])

    assert [(s.name, s.state, s.applied_at is not None) for s in statuses] == [
        *((name, "applied", True) for name in COMMON),
        ("svc/0001_widgets.sql", "applied", True),
        ("svc/0003_later.sql", "pending", False),
        ("svc/0002_gadgets.sql", "missing", True),
    ]
    assert await table_exists(pg_url, "widgets") and not await table_exists(pg_url, "later")


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("1_short.sql", "NNNN_lower_case_words"),
        ("0001-dash.sql", "NNNN_lower_case_words"),
        ("0001_Upper.sql", "NNNN"),
    ],
)
async def test_badly_named_files_are_refused_before_connecting(
    package: SqlPackage, filename: str, message: str
) -> None:
    package.write(filename, "SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        await migrate("postgresql://127.0.0.1:1/never_reached", [package.source()])


async def test_duplicate_numbers_and_sources_are_refused(package: SqlPackage) -> None:
    package.write("0001_one.sql", "SELECT 1;")
    package.write("0001_two.sql", "SELECT 2;")
    with pytest.raises(MigrationError, match="share a number"):
        package.source().load()

    (package.dir / "0001_two.sql").unlink()
    with pytest.raises(MigrationError, match="listed twice"):
        await migrate("postgresql://127.0.0.1:1/never_reached", [package.source(), package.source()])


async def test_missing_package_is_a_clear_error() -> None:
    with pytest.raises(MigrationError, match="no_such_package_xyz"):
        MigrationSource(name="svc", package="no_such_package_xyz").load()


async def test_unreachable_database_is_a_dependency_error(package: SqlPackage) -> None:
    package.write("0001_one.sql", "SELECT 1;")
    with pytest.raises(DependencyError, match="cannot connect"):
        await migrate("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2", [package.source()])
