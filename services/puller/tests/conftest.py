"""Pullers per test against the session's real NATS, PostgreSQL, S3 and OCI registry (docker-registry).

Each test gets a fresh database and its own bucket; models are pushed to the registry under unique names,
Ollama-style (GGUF model layer made with the ``gguf`` package, template, params, system, license).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# Helper modules next to this file (the suite runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))

from puller_testkit import MIB, OLLAMA, OciPusher, Puller, PushedModel, make_gguf, unique_outbox_ids  # noqa: E402
from registry_double import RegistryDouble  # noqa: E402

from modelhub_devstack.databases import create_database, database_url, drop_database  # noqa: E402
from modelhub_devstack.nats import drain_consumer  # noqa: E402
from modelhub_puller import bootstrap  # noqa: E402
from modelhub_puller.settings import PullerSettings  # noqa: E402


@pytest.fixture(scope="session")
def oci(oci_registry_url: str) -> OciPusher:
    return OciPusher(oci_registry_url)


@pytest.fixture(scope="session")
def double(oci_registry_url: str) -> Iterator[RegistryDouble]:
    server = RegistryDouble(oci_registry_url).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., bytes]:
    cache: dict[tuple[float, int, bool], bytes] = {}
    root = tmp_path_factory.mktemp("gguf")

    def build(megabytes: float = 6, seed: int = 1, vision: bool = False) -> bytes:
        key = (megabytes, seed, vision)
        if key not in cache:
            cache[key] = make_gguf(
                root / f"m-{megabytes}-{seed}-{vision}.gguf", megabytes=megabytes, seed=seed, vision=vision
            )
        return cache[key]

    return build


@pytest.fixture
def push_model(oci: OciPusher, gguf_files: Callable[..., bytes]) -> Callable[..., PushedModel]:
    def push(
        *,
        megabytes: float = 6,
        seed: int = 1,
        template: str = "{{ .System }} {{ .Prompt }}",
        system: str = "You are a test model.",
        params: dict[str, Any] | None = None,
        license_text: str = "Test License 1.0",
        projector: bytes | None = None,
        repository: str | None = None,
        tag: str = "latest",
    ) -> PushedModel:
        repository = repository or f"library/m{uuid.uuid4().hex[:10]}"
        layers: dict[str, bytes] = {"model": gguf_files(megabytes=megabytes, seed=seed)}
        if projector is not None:
            layers["projector"] = projector
        layers["template"] = template.encode()
        layers["system"] = system.encode()
        layers["params"] = json.dumps(
            params if params is not None else {"temperature": 0.6, "stop": ["<end>"]}
        ).encode()
        layers["license"] = license_text.encode()
        config = {
            "model_format": "gguf",
            "model_family": "llama",
            "model_families": ["llama"],
            "model_type": "268.10M",
            "file_type": "Q4_K_M",
            "architecture": "amd64",
            "os": "linux",
        }
        manifest = oci.push_manifest(repository, tag, config, [(OLLAMA + kind, data) for kind, data in layers.items()])
        return PushedModel(repository=repository, tag=tag, manifest=manifest, layers=layers)

    return push


@pytest.fixture
def puller_settings(
    service_settings: Callable[..., Any], oci: OciPusher, double: RegistryDouble
) -> Callable[..., PullerSettings]:
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    hosts = [oci.host, double.host, double.cdn_host]

    def build(**overrides: Any) -> PullerSettings:
        values: dict[str, Any] = {
            "bucket": bucket,
            "allowed_hosts": ["registry.ollama.ai", "hf.co", "huggingface.co", *hosts],
            "insecure_hosts": hosts,
            "part_size_bytes": 5 * MIB,
            "parallel_parts": 3,
            "reorder_window_parts": 4,
            "part_retries": 3,
            "retry_backoff_seconds": 0.05,
            "stall_timeout_seconds": 10,
            "heartbeat_seconds": 0.5,
            "lease_seconds": 2,
            "work_ack_wait_seconds": 3,
            "progress_interval_seconds": 0.1,
            "progress_persist_seconds": 0.2,
        }
        values.update(overrides)
        settings: PullerSettings = service_settings(PullerSettings, **values)
        return settings

    return build


@pytest.fixture
def make_puller(
    puller_settings: Callable[..., PullerSettings], make_token: Callable[..., str]
) -> Iterator[Callable[..., Puller]]:
    clients: list[TestClient] = []

    def start(settings: PullerSettings | None = None, **overrides: Any) -> Puller:
        settings = settings or puller_settings(**overrides)
        asyncio.run(bootstrap.run_migrations(settings))
        unique_outbox_ids(settings.database_url.get_secret_value())
        client = TestClient(bootstrap.build_app(settings))
        client.__enter__()
        clients.append(client)
        return Puller(client, settings, make_token)

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def puller(make_puller: Callable[..., Puller]) -> Puller:
    return make_puller()


@pytest.fixture
def registry_service(
    service_settings: Callable[..., Any], postgres_admin_url: str, make_token: Callable[..., str]
) -> Iterator[Callable[[str], dict[str, Any] | None]]:
    """The real registry service on a database of its own; yields a lookup of its base models."""
    from modelhub_registry import bootstrap as registry_bootstrap
    from modelhub_registry.settings import RegistrySettings

    name = f"registry_{uuid.uuid4().hex[:12]}"
    create_database(postgres_admin_url, name)
    settings = service_settings(
        RegistrySettings, database_url=database_url(postgres_admin_url, name), connection_sync_seconds=0
    )
    asyncio.run(registry_bootstrap.run_migrations(settings))
    unique_outbox_ids(settings.database_url.get_secret_value())  # its events must not collide with others'
    headers = {"Authorization": f"Bearer {make_token('root', 'admin')}"}
    with TestClient(registry_bootstrap.build_app(settings)) as client:

        def lookup(model_id: str) -> dict[str, Any] | None:
            items = client.get("/api/v1/base-models", headers=headers).json()["items"]
            return next((item for item in items if item["id"] == model_id), None)

        yield lookup
    drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module", autouse=True)
def leave_the_bus_as_found(nats_url: str) -> Iterator[None]:
    """After each module, acks what its pulls left for the registry's consumer on the session's NATS.

    Pulls here publish ``completed`` events; a registry started later in the session (another package's
    tests) would otherwise register those models and emit events whose outbox ids repeat the ids of that
    test's own fresh database (JetStream then drops them as duplicates). Only the test bus is touched.
    """
    yield
    asyncio.run(drain_consumer(nats_url, "MODELHUB_PULLS", "registry-pulls-completed"))
