"""Plain-SQL schema migrations, applied only by an explicit ``migrate`` command.

A :class:`MigrationSource` is a directory shipped inside a Python package that holds ``NNNN_name.sql`` files
(four digits, then lower-case words joined by ``_``). :func:`migrate` applies the pending files of each source
in the order given, each file in its own transaction, and records it in ``schema_migrations`` under the name
``<source>/<file>`` with the SHA-256 of its text. Services list :data:`COMMON_MIGRATIONS` (the outbox table)
before their own source.

Rules the runner enforces:

* Runners are serialised by a PostgreSQL advisory lock, so two replicas running ``migrate`` at once apply each
  file once.
* A file that was applied and has since been edited is refused (:class:`MigrationChecksumError`) before
  anything else runs: write a new migration instead.
* A file runs inside a transaction, so it must not contain ``BEGIN``/``COMMIT`` or statements that cannot
  run in one (``CREATE INDEX CONCURRENTLY``, ``VACUUM``).

Nothing here runs at import time or when a service starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from modelhub_common.errors import DependencyError, ModelhubError

__all__ = [
    "COMMON_MIGRATIONS",
    "Migration",
    "MigrationChecksumError",
    "MigrationError",
    "MigrationSource",
    "MigrationState",
    "MigrationStatus",
    "load_migrations",
    "migrate",
    "migration_status",
]

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(?P<number>\d{4})_[a-z0-9]+(?:_[a-z0-9]+)*\.sql$")
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
# A fixed key shared by every migrate runner on a database.
_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"modelhub.schema_migrations", digest_size=8).digest(), "big", signed=True)

_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(ModelhubError):
    """A migration source is malformed, a migration failed, or the runner could not take its lock."""

    code = "migration_failed"


class MigrationChecksumError(MigrationError):
    """An already-applied migration file was edited afterwards."""

    code = "migration_checksum_mismatch"


@dataclass(frozen=True)
class Migration:
    """One SQL file of a source."""

    source: str
    filename: str
    sql: bytes
    checksum: str

    @property
    def name(self) -> str:
        """The name recorded in ``schema_migrations``: ``<source>/<file>``."""
        return f"{self.source}/{self.filename}"


@dataclass(frozen=True)
class MigrationSource:
    """A directory of ``NNNN_name.sql`` files inside an importable package.

    ``name`` prefixes every recorded migration name, so sources may reuse file numbers.
    """

    name: str
    package: str
    directory: str = "migrations"

    def load(self) -> list[Migration]:
        """Reads and validates the files, sorted by number. Files not ending in ``.sql`` are ignored."""
        if not _SOURCE_NAME.match(self.name):
            raise MigrationError(f"migration source name {self.name!r} must match {_SOURCE_NAME.pattern}")
        root = self._root()
        migrations: list[Migration] = []
        numbers: dict[str, str] = {}
        for entry in root.iterdir():
            if not entry.is_file() or not entry.name.endswith(".sql"):
                continue
            match = _FILE_NAME.match(entry.name)
            if match is None:
                raise MigrationError(f"migration file {self.name}/{entry.name} is not named NNNN_lower_case_words.sql")
            number = match["number"]
            if number in numbers:
                raise MigrationError(
                    f"migration files {self.name}/{numbers[number]} and {self.name}/{entry.name} share a number"
                )
            numbers[number] = entry.name
            text = _normalise(entry.read_bytes())
            migrations.append(
                Migration(
                    source=self.name,
                    filename=entry.name,
                    sql=text,
                    checksum=hashlib.sha256(text).hexdigest(),
                )
            )
        return sorted(migrations, key=lambda m: m.filename)

    def _root(self) -> Traversable:
        try:
            root = resources.files(self.package).joinpath(self.directory)
        except ModuleNotFoundError as exc:
            raise MigrationError(f"migration source {self.name}: package {self.package!r} not found") from exc
        if not root.is_dir():
            raise MigrationError(f"migration source {self.name}: {self.package}/{self.directory} is not a directory")
        return root


COMMON_MIGRATIONS = MigrationSource(name="common", package="modelhub_common", directory="sql")
"""The tables modelhub_common's own adapters need (the outbox). List it before a service's source."""

MigrationState = Literal["applied", "pending", "changed", "missing"]


@dataclass(frozen=True)
class MigrationStatus:
    """One row of the status view.

    ``state`` is ``applied``, ``pending``, ``changed`` (applied, but the file was edited since) or ``missing``
    (recorded as applied for one of the given sources, but no longer shipped).
    """

    name: str
    state: MigrationState
    applied_at: datetime | None


def load_migrations(sources: Sequence[MigrationSource]) -> list[Migration]:
    """All migrations of ``sources`` in the order they are applied (source order, then file number)."""
    seen: set[str] = set()
    migrations: list[Migration] = []
    for source in sources:
        if source.name in seen:
            raise MigrationError(f"migration source {source.name!r} is listed twice")
        seen.add(source.name)
        migrations.extend(source.load())
    return migrations


async def migrate(database_url: str, sources: Sequence[MigrationSource], *, lock_timeout: float = 60.0) -> list[str]:
    """Applies the pending migrations of ``sources`` in order and returns the names applied.

    Waits up to ``lock_timeout`` seconds for another runner to finish. Raises :class:`MigrationChecksumError`
    (applying nothing) when an applied file changed, :class:`MigrationError` when a file fails (earlier files
    stay applied, the failing one is rolled back), and :class:`DependencyError` when Postgres is unreachable.
    """
    migrations = load_migrations(sources)
    applied_names: list[str] = []
    try:
        async with await _connect(database_url) as conn:
            await _lock(conn, lock_timeout)
            await conn.execute(_CREATE_TABLE)
            applied = await _applied(conn)
            changed = [m.name for m in migrations if m.name in applied and applied[m.name][0] != m.checksum]
            if changed:
                raise MigrationChecksumError(
                    "applied migrations were edited afterwards (add a new migration instead): " + ", ".join(changed)
                )
            for migration in migrations:
                if migration.name in applied:
                    continue
                await _apply(conn, migration)
                applied_names.append(migration.name)
    except psycopg.Error as exc:
        raise DependencyError(f"migrate: PostgreSQL failed: {exc.__class__.__name__}") from exc
    if not applied_names:
        logger.info("schema is up to date", extra={"migrations": len(migrations)})
    return applied_names


async def migration_status(database_url: str, sources: Sequence[MigrationSource]) -> list[MigrationStatus]:
    """Applied, pending, changed and missing migrations of ``sources``, for a status view. Changes nothing."""
    migrations = load_migrations(sources)
    try:
        async with await _connect(database_url) as conn:
            exists = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = await exists.fetchone()
            applied = await _applied(conn) if row is not None and row[0] else {}
    except psycopg.Error as exc:
        raise DependencyError(f"migration status: PostgreSQL failed: {exc.__class__.__name__}") from exc

    statuses: list[MigrationStatus] = []
    for migration in migrations:
        record = applied.get(migration.name)
        if record is None:
            statuses.append(MigrationStatus(migration.name, "pending", None))
        else:
            checksum, applied_at = record
            state: MigrationState = "applied" if checksum == migration.checksum else "changed"
            statuses.append(MigrationStatus(migration.name, state, applied_at))
    known = {m.name for m in migrations}
    prefixes = tuple(f"{source.name}/" for source in sources)
    for name in sorted(applied):
        if name not in known and name.startswith(prefixes):
            statuses.append(MigrationStatus(name, "missing", applied[name][1]))
    return statuses


async def _connect(database_url: str) -> psycopg.AsyncConnection[TupleRow]:
    try:
        return await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, application_name="modelhub-migrate", connect_timeout=10
        )
    except psycopg.Error as exc:
        raise DependencyError(f"migrate: cannot connect to PostgreSQL: {exc.__class__.__name__}") from exc


async def _lock(conn: psycopg.AsyncConnection[TupleRow], timeout: float) -> None:
    # lock_timeout bounds the wait for the advisory lock; it is reset so migrations themselves are unaffected.
    await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))
    try:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    except psycopg.errors.LockNotAvailable as exc:
        raise MigrationError(f"another migrate run held the lock for more than {timeout:g}s") from exc
    await conn.execute("RESET lock_timeout")


async def _applied(conn: psycopg.AsyncConnection[TupleRow]) -> dict[str, tuple[str, datetime]]:
    cursor = await conn.execute("SELECT name, checksum, applied_at FROM schema_migrations")
    result: dict[str, tuple[str, datetime]] = {}
    for name, checksum, applied_at in await cursor.fetchall():
        result[name] = (checksum, applied_at)
    return result


async def _apply(conn: psycopg.AsyncConnection[TupleRow], migration: Migration) -> None:
    logger.info("applying migration", extra={"migration": migration.name})
    try:
        async with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, so it may hold several statements.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                (migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        if conn.broken:
            raise
        raise MigrationError(f"migration {migration.name} failed: {exc.__class__.__name__}: {exc}") from exc
    logger.info("applied migration", extra={"migration": migration.name, "checksum": migration.checksum})


def _normalise(text: bytes) -> bytes:
    # Line endings differ between checkouts (git autocrlf); they must not change a file's checksum.
    return text.replace(b"\r\n", b"\n")
