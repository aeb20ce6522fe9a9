"""The same four servers as Docker containers via testcontainers, for ``MODELHUB_TEST_INFRA=containers``.

Optional: testcontainers lives in the workspace's ``containers`` dependency group and needs a Docker
engine. It is imported only when this mode is chosen; the default path never touches Docker.
"""

from __future__ import annotations

import importlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from modelhub_devstack.endpoints import S3Endpoint
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.server import http_ok

NATS_IMAGE = "nats:2.11"
POSTGRES_IMAGE = "pgvector/pgvector:pg18"
MINIO_IMAGE = "minio/minio:latest"
REGISTRY_IMAGE = "registry:2"
_READY_TIMEOUT_SECONDS = 120.0


def _docker_container_class() -> Any:
    try:
        module = importlib.import_module("testcontainers.core.container")
    except ImportError as exc:
        raise DevstackError(
            "MODELHUB_TEST_INFRA=containers needs testcontainers: run "
            "`uv sync --frozen --all-packages --group containers` (and have a Docker engine running), "
            "or unset MODELHUB_TEST_INFRA to use local servers"
        ) from exc
    return module.DockerContainer


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while not check():
        if time.monotonic() >= deadline:
            raise DevstackError(f"{what} container was not ready within {_READY_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.25)


@contextmanager
def _running(container: Any, what: str) -> Iterator[Any]:
    try:
        container.start()
    except Exception as exc:  # docker-py raises many unrelated types; all mean "could not start".
        raise DevstackError(f"could not start the {what} container: {exc}") from exc
    try:
        yield container
    finally:
        container.stop()


def _address(container: Any, port: int) -> str:
    return f"{container.get_container_host_ip()}:{container.get_exposed_port(port)}"


@contextmanager
def nats_container() -> Iterator[str]:
    """A JetStream-enabled NATS container; yields its client URL."""
    container = _docker_container_class()(NATS_IMAGE).with_command("-js -m 8222").with_exposed_ports(4222, 8222)
    with _running(container, "NATS"):
        monitor = _address(container, 8222)
        _wait_until(lambda: http_ok(f"http://{monitor}/healthz?js-enabled-only=true"), "NATS")
        yield f"nats://{_address(container, 4222)}"


@contextmanager
def postgres_container() -> Iterator[str]:
    """A PostgreSQL+pgvector container; yields the superuser URL of the ``postgres`` database."""
    password = secrets.token_urlsafe(18)
    container = (
        _docker_container_class()(POSTGRES_IMAGE).with_env("POSTGRES_PASSWORD", password).with_exposed_ports(5432)
    )
    with _running(container, "PostgreSQL"):
        url = f"postgresql://postgres:{password}@{_address(container, 5432)}/postgres"

        def accepts_connections() -> bool:
            try:
                with psycopg.connect(url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error:
                return False
            return True

        _wait_until(accepts_connections, "PostgreSQL")
        yield url


@contextmanager
def s3_container() -> Iterator[S3Endpoint]:
    """A MinIO container; yields its endpoint and root credentials."""
    access_key, secret_key = "MH" + secrets.token_hex(9).upper(), secrets.token_hex(20)
    container = (
        _docker_container_class()(MINIO_IMAGE)
        .with_env("MINIO_ROOT_USER", access_key)
        .with_env("MINIO_ROOT_PASSWORD", secret_key)
        .with_command("server /data")
        .with_exposed_ports(9000)
    )
    with _running(container, "MinIO"):
        endpoint = _address(container, 9000)
        _wait_until(lambda: http_ok(f"http://{endpoint}/minio/health/ready"), "MinIO")
        yield S3Endpoint(endpoint=endpoint, access_key=access_key, secret_key=secret_key)


@contextmanager
def oci_registry_container() -> Iterator[str]:
    """A distribution registry container; yields its ``http://host:port`` URL."""
    container = _docker_container_class()(REGISTRY_IMAGE).with_exposed_ports(5000)
    with _running(container, "OCI registry"):
        url = f"http://{_address(container, 5000)}"
        _wait_until(lambda: http_ok(f"{url}/v2/"), "OCI registry")
        yield url
