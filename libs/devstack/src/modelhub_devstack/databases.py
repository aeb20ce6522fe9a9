"""Creating and dropping databases on any PostgreSQL server we hold a superuser URL for."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from modelhub_devstack.errors import DevstackError

# Conservative on purpose: names end up in URLs and shell-sourced env files as well as in SQL.
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CONNECT_TIMEOUT_SECONDS = 5


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise DevstackError(f"invalid {kind} name {name!r}: use lower-case letters, digits and '_'")


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` (``postgresql://user:password@host:port/any``) pointing at ``dbname`` instead."""
    _check_name("database", dbname)
    parts = urlsplit(server_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
        raise DevstackError(
            "a PostgreSQL URL of the form postgresql://user:password@host:port/dbname is required, "
            f"got one with scheme {parts.scheme!r}"
        )
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, ""))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and tables."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit((parts.scheme, f"{user}:***@{hostinfo}", parts.path, parts.query, parts.fragment))


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise DevstackError(f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}") from exc


def create_database(admin_url: str, name: str, extensions: Sequence[str] = ("vector",)) -> bool:
    """Create database ``name`` unless it exists, then the ``extensions`` in it; True if it was created."""
    _check_name("database", name)
    for extension in extensions:
        _check_name("extension", extension)
    created = False
    with _connect(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created = True
            except psycopg.errors.DuplicateDatabase:
                pass  # Someone else created it between our check and our CREATE: just as good.
            except psycopg.Error as exc:
                raise DevstackError(f"could not create database {name!r}: {exc}") from exc
    if extensions:
        with _connect(database_url(admin_url, name)) as conn:
            for extension in extensions:
                try:
                    conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
                except psycopg.Error as exc:
                    raise DevstackError(
                        f"could not create extension {extension!r} in database {name!r}: {exc}"
                    ) from exc
    return created


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting anyone still using it."""
    _check_name("database", name)
    with _connect(admin_url) as conn:
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DevstackError(f"could not drop database {name!r}: {exc}") from exc
