"""pytest fixtures that give tests real servers: NATS+JetStream, PostgreSQL+pgvector, S3, OCI registry.

Registered for the whole workspace through the ``pytest11`` entry point. A server starts only when a test
asks for its fixture, once per session, on free ports in a temporary directory, and stops at the end.

Environment switches:

* ``MODELHUB_TEST_NATS_URL``, ``MODELHUB_TEST_DATABASE_URL`` (a superuser URL),
  ``MODELHUB_TEST_S3_ENDPOINT`` + ``MODELHUB_TEST_S3_ACCESS_KEY`` + ``MODELHUB_TEST_S3_SECRET_KEY``
  (``https://`` in front of the endpoint means TLS), ``MODELHUB_TEST_OCI_REGISTRY_URL``: use that server
  instead of starting one.
* Tool servers (``mcp_tool_server``, ``openapi_tool_server`` and their ``_open`` variants) are always local
  processes; the plain ones require the bearer token they carry in ``.token``, the ``_open`` ones none.
* ``MODELHUB_TEST_INFRA=containers``: start Docker containers via testcontainers instead of local
  processes (``local``, the default, needs no Docker).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhub_devstack import containers
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.endpoints import S3Endpoint
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.oci_registry import OciRegistry
from modelhub_devstack.postgres import PostgresServer
from modelhub_devstack.prometheus import PrometheusServer
from modelhub_devstack.seaweed import SeaweedS3
from modelhub_devstack.tool_servers import ToolServer, ToolServerEndpoint

ENV_INFRA = "MODELHUB_TEST_INFRA"
ENV_NATS_URL = "MODELHUB_TEST_NATS_URL"
ENV_DATABASE_URL = "MODELHUB_TEST_DATABASE_URL"
ENV_S3_ENDPOINT = "MODELHUB_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "MODELHUB_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "MODELHUB_TEST_S3_SECRET_KEY"
ENV_OCI_REGISTRY_URL = "MODELHUB_TEST_OCI_REGISTRY_URL"

_LOCAL = "local"
_CONTAINERS = "containers"


def _use_containers() -> bool:
    mode = os.environ.get(ENV_INFRA, _LOCAL).strip().lower() or _LOCAL
    if mode not in (_LOCAL, _CONTAINERS):
        raise DevstackError(f"{ENV_INFRA} must be {_LOCAL!r} or {_CONTAINERS!r}, not {mode!r}")
    return mode == _CONTAINERS


def _override(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@pytest.fixture(scope="session")
def modelhub_devstack_dir() -> Iterator[Path]:
    """A temporary directory holding every server this session starts; removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="modelhub-test-"))
    # mkdtemp makes it 0700 root, but PostgreSQL runs as the modelhub-pg system user and must pass
    # through it to reach its data directory. o+x lets it enter without listing or reading anything.
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``nats://127.0.0.1:PORT`` of a NATS server with JetStream."""
    override = _override(ENV_NATS_URL)
    if override is not None:
        yield override
    elif _use_containers():
        with containers.nats_container() as url:
            yield url
    else:
        root: Path = request.getfixturevalue("modelhub_devstack_dir")
        with NatsServer(root / "nats") as server:
            yield server.url


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Superuser URL of the ``postgres`` database on a PostgreSQL 18 server with pgvector available."""
    override = _override(ENV_DATABASE_URL)
    if override is not None:
        yield override
    elif _use_containers():
        with containers.postgres_container() as url:
            yield url
    else:
        root: Path = request.getfixturevalue("modelhub_devstack_dir")
        # durable=False (fsync off): a throwaway cluster does not need crash safety, tests want speed.
        with PostgresServer(root / "postgres", durable=False) as server:
            yield server.admin_url


@pytest.fixture
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    """URL of a fresh, empty database with the ``vector`` extension, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:20]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        yield database_url(postgres_admin_url, name)
    finally:
        drop_database(postgres_admin_url, name)


def _s3_override() -> S3Endpoint | None:
    values = {name: _override(name) for name in (ENV_S3_ENDPOINT, ENV_S3_ACCESS_KEY, ENV_S3_SECRET_KEY)}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise DevstackError(f"an external S3 server also needs {', '.join(missing)} to be set")
    endpoint, access_key, secret_key = (values[name] or "" for name in values)
    secure = endpoint.startswith("https://")
    endpoint = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
    return S3Endpoint(endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure)


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest) -> Iterator[S3Endpoint]:
    """An S3-compatible API (SeaweedFS locally, MinIO in containers) with admin credentials."""
    override = _s3_override()
    if override is not None:
        yield override
    elif _use_containers():
        with containers.s3_container() as endpoint:
            yield endpoint
    else:
        root: Path = request.getfixturevalue("modelhub_devstack_dir")
        # Its graceful stop takes seconds and the directory is thrown away anyway: SIGKILL quickly.
        with SeaweedS3(root / "s3", stop_timeout=0.5) as server:
            yield server.s3_endpoint()


@pytest.fixture(scope="session")
def oci_registry_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an OCI distribution registry without authentication."""
    override = _override(ENV_OCI_REGISTRY_URL)
    if override is not None:
        yield override.rstrip("/")
    elif _use_containers():
        with containers.oci_registry_container() as url:
            yield url
    else:
        root: Path = request.getfixturevalue("modelhub_devstack_dir")
        with OciRegistry(root / "oci-registry") as server:
            yield server.url


@pytest.fixture(scope="session")
def prometheus_server(request: pytest.FixtureRequest) -> Iterator[PrometheusServer]:
    """A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 scraping every second; point it at services
    with ``.set_targets({...})`` and read what it scraped with ``.query(promql)`` / ``.wait_for(promql)``."""
    root: Path = request.getfixturevalue("modelhub_devstack_dir")
    with PrometheusServer(root / "prometheus") as server:
        yield server


def _tool_server(request: pytest.FixtureRequest, kind: str, *, with_token: bool) -> Iterator[ToolServerEndpoint]:
    root: Path = request.getfixturevalue("modelhub_devstack_dir")
    token = f"tool-token-{uuid.uuid4().hex}" if with_token else None
    name = f"{kind}-tools{'' if with_token else '-open'}"
    with ToolServer(root / name, kind=kind, token=token) as server:
        yield ToolServerEndpoint(kind=kind, url=server.url, token=token)


@pytest.fixture(scope="session")
def mcp_tool_server(request: pytest.FixtureRequest) -> Iterator[ToolServerEndpoint]:
    """A real MCP server (FastMCP, streamable HTTP): ``.url`` is its ``/mcp`` endpoint, ``.token`` the bearer
    every call needs. Tools: add, echo, sleep, big, fail, whoami (see modelhub_devstack.tool_servers)."""
    yield from _tool_server(request, "mcp", with_token=True)


@pytest.fixture(scope="session")
def mcp_tool_server_open(request: pytest.FixtureRequest) -> Iterator[ToolServerEndpoint]:
    """The same MCP server without authentication (``.token`` is None)."""
    yield from _tool_server(request, "mcp", with_token=False)


@pytest.fixture(scope="session")
def openapi_tool_server(request: pytest.FixtureRequest) -> Iterator[ToolServerEndpoint]:
    """A real OpenAPI service (FastAPI) with the same tools: ``.url`` is its ``/openapi.json`` document (open),
    ``.token`` the bearer every operation needs."""
    yield from _tool_server(request, "openapi", with_token=True)


@pytest.fixture(scope="session")
def openapi_tool_server_open(request: pytest.FixtureRequest) -> Iterator[ToolServerEndpoint]:
    """The same OpenAPI service without authentication (``.token`` is None)."""
    yield from _tool_server(request, "openapi", with_token=False)
