"""The dev stack's up → healthy → down → up cycle on real infrastructure, in a temporary MODELHUB_HOME.

Services are injected: a tiny stand-in service (stdlib HTTP server) exercises migrate/serve/readyz/stop
without depending on the real services, which the end-to-end suite covers.
"""

from __future__ import annotations

import io
import json
import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from minio import Minio

from modelhub_devstack import DevstackError, S3Endpoint
from modelhub_devstack.endpoints_file import read_endpoints_env
from modelhub_devstack.processes import is_alive, read_pid_file
from modelhub_devstack.services import DEFAULT_SERVICES, InfraEndpoints, ServiceSpec, service_environment
from modelhub_devstack.stack import TOKEN_TTL_SECONDS, ComponentState, Stack
from modelhub_devstack.state import StackPaths, load_ports, load_secrets, save_ports

FAKE_SERVICE = ServiceSpec("fake_echo", "MODELHUB_FAKE_ECHO_", "modelhub_fake_echo", "MODELHUB_FAKE_ECHO_URL")
FAKE_SERVICE_MAIN = textwrap.dedent(
    """
    import http.server, json, os, pathlib, sys

    command = sys.argv[1]
    if command == "migrate":
        pathlib.Path("migrated").write_text("yes")
        sys.exit(0)
    settings = {k: v for k, v in os.environ.items() if k.startswith("MODELHUB_FAKE_ECHO_")}
    pathlib.Path("settings.json").write_text(json.dumps(settings))

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()

    http.server.HTTPServer(("127.0.0.1", int(settings["MODELHUB_FAKE_ECHO_PORT"])), Ready).serve_forever()
    """
)


@pytest.fixture
def fake_service_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "site" / "modelhub_fake_echo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_SERVICE_MAIN)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(package.parent), os.getenv("PYTHONPATH")])))
    return package.parent


@pytest.fixture
def home(modelhub_devstack_dir: Path) -> Iterator[Path]:
    # Inside the session's 0711 directory, so the PostgreSQL system user can reach its data.
    path = modelhub_devstack_dir / "stack-home"
    yield path
    Stack(path, services=(FAKE_SERVICE,)).clean()


def _states(statuses: list) -> dict[str, ComponentState]:  # type: ignore[type-arg]
    return {status.name: status.state for status in statuses}


def test_up_down_up_keeps_ports_secrets_and_data(home: Path, fake_service_path: Path) -> None:
    stack = Stack(home, services=(FAKE_SERVICE,))
    paths = StackPaths(home)

    first = stack.up()
    assert _states(first) == {
        "nats": ComponentState.STARTED,
        "postgres": ComponentState.STARTED,
        "s3": ComponentState.STARTED,
        "fake_echo": ComponentState.STARTED,
    }
    ports = load_ports(paths)
    secrets = load_secrets(paths)
    assert secrets is not None
    assert len(secrets.jwt_secret.encode()) >= 32
    for private in (paths.secrets_file, paths.endpoints_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600

    endpoints = read_endpoints_env(paths.endpoints_file)
    assert endpoints["NATS_URL"] == f"nats://127.0.0.1:{ports['nats']}"
    assert endpoints["MODELHUB_S3_ENDPOINT"] == f"127.0.0.1:{ports['s3']}"
    assert endpoints["MODELHUB_FAKE_ECHO_URL"] == f"http://127.0.0.1:{ports['fake_echo']}"
    claims = jwt.decode(endpoints["MODELHUB_TOKEN"], secrets.jwt_secret, algorithms=["HS256"], issuer="modelhub")
    assert (claims["sub"], claims["role"]) == ("admin", "admin")
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_SECONDS

    service_dir = home / "services" / "fake_echo"
    assert (service_dir / "migrated").read_text() == "yes"
    settings = json.loads((service_dir / "settings.json").read_text())
    assert settings["MODELHUB_FAKE_ECHO_DATABASE_URL"].endswith("/modelhub_fake_echo")
    assert settings["MODELHUB_FAKE_ECHO_PORT"] == str(ports["fake_echo"])
    assert settings["MODELHUB_FAKE_ECHO_JWT_SECRET"] == secrets.jwt_secret

    # Leave data in every store, to find it again after a restart.
    with psycopg.connect(endpoints["DATABASE_URL"].rsplit("/", 1)[0] + "/modelhub_fake_echo") as conn:
        conn.execute("CREATE TABLE kept (v vector(2))")
        conn.execute("INSERT INTO kept VALUES ('[1,2]')")
    s3 = Minio(endpoints["MODELHUB_S3_ENDPOINT"], secrets.s3_access_key, secrets.s3_secret_key, secure=False)
    s3.make_bucket("kept")
    s3.put_object("kept", "object", io.BytesIO(b"data"), length=4)

    # Idempotent: a second `up` leaves everything alone.
    assert set(_states(stack.up()).values()) == {ComponentState.RUNNING}

    # A crashed Postgres (its zombie and lock files left behind) comes back on `up`.
    postmaster = read_pid_file(home / "postgres" / "data" / "postmaster.pid")
    assert postmaster is not None
    os.kill(postmaster, 9)
    assert _states(stack.status())["postgres"] == ComponentState.NOT_RUNNING
    assert _states(stack.up())["postgres"] == ComponentState.STARTED

    service_pid = read_pid_file(home / "run" / "fake_echo.pid")
    stopped = stack.down()
    assert [status.name for status in stopped] == ["fake_echo", "s3", "postgres", "nats"]
    assert set(_states(stopped).values()) == {ComponentState.STOPPED}
    assert service_pid is not None and not is_alive(service_pid)
    assert set(_states(stack.status()).values()) == {ComponentState.NOT_RUNNING}
    assert set(_states(stack.down()).values()) == {ComponentState.NOT_RUNNING}

    assert set(_states(stack.up()).values()) == {ComponentState.STARTED}
    assert load_ports(paths) == ports
    assert load_secrets(paths) == secrets
    with psycopg.connect(endpoints["DATABASE_URL"].rsplit("/", 1)[0] + "/modelhub_fake_echo") as conn:
        assert conn.execute("SELECT v::text FROM kept").fetchall() == [("[1,2]",)]
    response = s3.get_object("kept", "object")
    try:
        assert response.read() == b"data"
    finally:
        response.close()
        response.release_conn()


def test_a_service_that_is_not_installed_is_reported_not_fatal(modelhub_devstack_dir: Path) -> None:
    home = modelhub_devstack_dir / "stack-missing"
    missing = ServiceSpec("does_not_exist", "MODELHUB_NOPE_", "modelhub_nope", "MODELHUB_NOPE_URL")
    stack = Stack(home, services=(missing,))
    try:
        statuses = {status.name: status for status in stack.up()}
        assert statuses["does_not_exist"].state == ComponentState.NOT_INSTALLED
        assert "uv sync" in statuses["does_not_exist"].detail
        assert statuses["nats"].state == ComponentState.STARTED
    finally:
        stack.clean()
    assert not home.exists()


def test_a_peer_outside_the_stack_is_a_configuration_error(tmp_path: Path) -> None:
    lonely = ServiceSpec("rag", "MODELHUB_RAG_", "modelhub_rag", "MODELHUB_RAG_URL", peers=("registry",))
    with pytest.raises(DevstackError, match="rag calls registry, which is not part"):
        Stack(tmp_path, services=(lonely,))


def test_clean_refuses_a_directory_that_is_not_a_stack(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")

    with pytest.raises(DevstackError, match="refusing to delete"):
        Stack(tmp_path, services=()).clean()
    assert (tmp_path / "precious.txt").exists()


def test_service_environment_for_the_gateway() -> None:
    gateway = next(spec for spec in DEFAULT_SERVICES if spec.name == "chat_gateway")
    ports = {"registry": 1001, "rag": 1003, "chat_gateway": 1004, "chat_gateway_grpc": 1005}
    infra = InfraEndpoints(
        nats_url="nats://127.0.0.1:4222",
        postgres_admin_url="postgresql://postgres:pw@127.0.0.1:5432/postgres",
        s3=S3Endpoint("127.0.0.1:9000", "ak", "sk"),
        jwt_secret="x" * 40,
    )
    env = service_environment(gateway, ports=ports, infra=infra, log_level="DEBUG")
    assert env == {
        "MODELHUB_GATEWAY_HOST": "127.0.0.1",
        "MODELHUB_GATEWAY_PORT": "1004",
        "MODELHUB_GATEWAY_GRPC_PORT": "1005",
        "MODELHUB_GATEWAY_NATS_URL": "nats://127.0.0.1:4222",
        "MODELHUB_GATEWAY_JWT_SECRET": "x" * 40,
        "MODELHUB_GATEWAY_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:5432/modelhub_gateway",
        "MODELHUB_GATEWAY_S3_ENDPOINT": "127.0.0.1:9000",
        "MODELHUB_GATEWAY_S3_ACCESS_KEY": "ak",
        "MODELHUB_GATEWAY_S3_SECRET_KEY": "sk",
        "MODELHUB_GATEWAY_S3_SECURE": "false",
        "MODELHUB_GATEWAY_LOG_LEVEL": "DEBUG",
        "MODELHUB_GATEWAY_REGISTRY_URL": "http://127.0.0.1:1001",
        "MODELHUB_GATEWAY_RAG_URL": "http://127.0.0.1:1003",
        "MODELHUB_GATEWAY_ALLOW_PRIVATE_URLS": "true",
    }
    assert "pw" not in repr(infra)


def test_the_puller_spools_parts_under_its_own_state_directory(tmp_path: Path) -> None:
    puller = next(spec for spec in DEFAULT_SERVICES if spec.name == "puller")
    infra = InfraEndpoints(
        nats_url="nats://127.0.0.1:4222",
        postgres_admin_url="postgresql://postgres:pw@127.0.0.1:5432/postgres",
        s3=S3Endpoint("127.0.0.1:9000", "ak", "sk"),
        jwt_secret="x" * 40,
    )
    ports = {"registry": 1001, "puller": 1002}
    env = service_environment(puller, ports=ports, infra=infra, workdir=tmp_path / "puller")
    assert env["MODELHUB_PULLER_SPOOL_DIR"] == str(tmp_path / "puller" / "spool")
    assert "MODELHUB_PULLER_SPOOL_DIR" not in service_environment(puller, ports=ports, infra=infra)


def test_up_with_monitoring_starts_a_prometheus_scraping_the_services(
    modelhub_devstack_dir: Path, fake_service_path: Path
) -> None:
    from modelhub_devstack.prometheus import PrometheusServer

    home = modelhub_devstack_dir / "stack-home-monitoring"
    stack = Stack(home, services=(FAKE_SERVICE,), monitoring=True)
    try:
        states = _states(stack.up())
        assert states["prometheus"] == ComponentState.STARTED
        paths = StackPaths(home)
        endpoints = read_endpoints_env(paths.endpoints_file)
        port = load_ports(paths)["prometheus"]
        assert endpoints["MODELHUB_PROMETHEUS_URL"] == f"http://127.0.0.1:{port}"
        prometheus = PrometheusServer(home / "prometheus", port=port)
        # The fake service answers 404 on /metrics, so the target is down, but it is the stack's service.
        (target,) = prometheus.wait_for('up{service_instance="fake_echo"}')
        assert target["metric"]["instance"] == f"127.0.0.1:{load_ports(paths)['fake_echo']}"
        assert _states(stack.up())["prometheus"] == ComponentState.RUNNING
        assert _states(stack.status())["prometheus"] == ComponentState.RUNNING
        stopped = stack.down()
        assert [s.name for s in stopped][0] == "prometheus"
        assert "prometheus" not in _states(stack.status())
    finally:
        Stack(home, services=(FAKE_SERVICE,)).clean()


def test_service_environment_for_the_console_has_no_database_and_the_gateways_grpc_address() -> None:
    console = next(spec for spec in DEFAULT_SERVICES if spec.name == "console")
    infra = InfraEndpoints(
        nats_url="nats://127.0.0.1:4222",
        postgres_admin_url="postgresql://postgres:pw@127.0.0.1:5432/postgres",
        s3=S3Endpoint("127.0.0.1:9000", "ak", "sk"),
        jwt_secret="x" * 40,
    )
    ports = {
        "registry": 1001,
        "puller": 1002,
        "rag": 1003,
        "chat_gateway": 1004,
        "chat_gateway_grpc": 1005,
        "console": 1006,
    }
    env = service_environment(console, ports=ports, infra=infra)
    assert env["MODELHUB_CONSOLE_PORT"] == "1006"
    assert env["MODELHUB_CONSOLE_REGISTRY_URL"] == "http://127.0.0.1:1001"
    assert env["MODELHUB_CONSOLE_PULLER_URL"] == "http://127.0.0.1:1002"
    assert env["MODELHUB_CONSOLE_RAG_URL"] == "http://127.0.0.1:1003"
    assert env["MODELHUB_CONSOLE_GATEWAY_GRPC"] == "127.0.0.1:1005"
    assert "MODELHUB_CONSOLE_DATABASE_URL" not in env
    assert not console.migrates and console.url_variable == "MODELHUB_CONSOLE_URL"


def test_up_as_a_cluster_runs_three_nats_nodes_and_two_replicas_of_each_service(
    modelhub_devstack_dir: Path, fake_service_path: Path
) -> None:
    home = modelhub_devstack_dir / "cluster-home"
    stack = Stack(home, services=(FAKE_SERVICE,), cluster=True)
    try:
        assert _states(stack.up()) == {
            **dict.fromkeys(("n1", "n2", "n3"), ComponentState.STARTED),
            "postgres": ComponentState.STARTED,
            "s3": ComponentState.STARTED,
            "fake_echo": ComponentState.STARTED,
            "fake_echo-2": ComponentState.STARTED,
        }
        ports = load_ports(StackPaths(home))
        nats_urls = [f"nats://127.0.0.1:{ports[f'nats_n{n}']}" for n in (1, 2, 3)]
        # One JetStream cluster: every node routes to the two others and sees a meta group of three.
        for n in (1, 2, 3):
            monitor = f"http://127.0.0.1:{ports[f'nats_n{n}_monitor']}"
            assert httpx.get(f"{monitor}/routez", timeout=5).json()["num_routes"] >= 2
            assert httpx.get(f"{monitor}/jsz", timeout=5).json()["meta_cluster"]["cluster_size"] == 3

        endpoints = read_endpoints_env(StackPaths(home).endpoints_file)
        assert endpoints["NATS_URL"] == ",".join(nats_urls)
        replica_urls = [f"http://127.0.0.1:{ports['fake_echo']}", f"http://127.0.0.1:{ports['fake_echo_r2']}"]
        assert endpoints["MODELHUB_FAKE_ECHO_URLS"] == ",".join(replica_urls)
        assert endpoints["MODELHUB_FAKE_ECHO_URL"] == replica_urls[0]
        for name, port in (("fake_echo", ports["fake_echo"]), ("fake_echo-2", ports["fake_echo_r2"])):
            settings = json.loads((home / "services" / name / "settings.json").read_text())
            assert settings["MODELHUB_FAKE_ECHO_PORT"] == str(port)
            assert settings["MODELHUB_FAKE_ECHO_NATS_URL"] == ",".join(nats_urls)
            assert settings["MODELHUB_FAKE_ECHO_STREAM_REPLICAS"] == "3"
            assert settings["MODELHUB_FAKE_ECHO_DATABASE_URL"].endswith("/modelhub_fake_echo")  # one database
    finally:
        # Without cluster=True: the persisted ports say it is a cluster, so every node and replica stops.
        stopped = Stack(home, services=(FAKE_SERVICE,)).clean()
        assert [status.name for status in stopped] == ["fake_echo-2", "fake_echo", "s3", "postgres", "n3", "n2", "n1"]


def test_a_single_node_stack_must_be_cleaned_before_it_becomes_a_cluster(tmp_path: Path) -> None:
    save_ports(StackPaths(tmp_path), {"nats": 4222, "nats_monitor": 8222})  # as a single-node `up` leaves them
    with pytest.raises(DevstackError, match="clean"):
        Stack(tmp_path, services=(FAKE_SERVICE,), cluster=True).up()
