"""The modelhub services the dev stack runs, and the environment each one gets."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelhub_devstack import databases
from modelhub_devstack.endpoints import S3Endpoint
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK
from modelhub_devstack.server import ManagedServer, http_ok

_MIGRATE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ServiceSpec:
    """One service: run as ``python -m modelhub_<name> migrate|serve``, configured by env variables."""

    #: Component name, also the Python package suffix (``chat_gateway`` → ``modelhub_chat_gateway``).
    name: str
    #: Prefix of every setting the service reads, e.g. ``MODELHUB_REGISTRY_``.
    env_prefix: str
    #: The service's own PostgreSQL database; empty for a service that owns no data (the console).
    database: str
    #: Variable in ``endpoints.env`` holding the service's HTTP base URL.
    url_variable: str
    #: Services whose base URL it needs, passed as ``<PREFIX><PEER>_URL``.
    peers: tuple[str, ...] = ()
    #: If set, the service also serves gRPC (port in ``<PREFIX>GRPC_PORT``); this endpoints.env
    #: variable holds its ``host:port``.
    grpc_variable: str | None = None
    #: Settings that name a local directory of the service (e.g. the puller's ``SPOOL_DIR``), given as
    #: ``(setting, subdirectory)``: the stack points them into the service's own state directory.
    local_dirs: tuple[tuple[str, str], ...] = ()
    #: Settings the dev stack always gives it, as ``(setting, value)``.
    dev_settings: tuple[tuple[str, str], ...] = ()
    #: gRPC services it calls, as ``(setting, peer)``: the setting gets the peer's gRPC ``host:port``.
    grpc_peers: tuple[tuple[str, str], ...] = ()
    #: False for a service with no ``migrate`` command (it has no database).
    migrates: bool = True

    @property
    def module(self) -> str:
        return f"modelhub_{self.name}"

    @property
    def port_names(self) -> tuple[str, ...]:
        """Keys of this service's ports in the stack's persisted port map."""
        return (self.name, f"{self.name}_grpc") if self.grpc_variable else (self.name,)

    @property
    def peer_env_names(self) -> dict[str, str]:
        return {peer: f"{self.env_prefix}{peer.upper()}_URL" for peer in self.peers}


# Services start side by side; a peer is only called once requests arrive (the registry calls rag during
# an import, to check knowledge references), so the URLs are all a service needs at start.
DEFAULT_SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "registry",
        "MODELHUB_REGISTRY_",
        "modelhub_registry",
        "MODELHUB_REGISTRY_URL",
        peers=("rag",),
        # Everything of the dev stack (and a local Ollama) is on loopback.
        dev_settings=(("ALLOW_PRIVATE_URLS", "true"),),
    ),
    ServiceSpec(
        "puller",
        "MODELHUB_PULLER_",
        "modelhub_puller",
        "MODELHUB_PULLER_URL",
        peers=("registry",),
        local_dirs=(("SPOOL_DIR", "spool"),),
    ),
    ServiceSpec("rag", "MODELHUB_RAG_", "modelhub_rag", "MODELHUB_RAG_URL", peers=("registry",)),
    ServiceSpec(
        "chat_gateway",
        "MODELHUB_GATEWAY_",
        "modelhub_gateway",
        "MODELHUB_GATEWAY_HTTP",
        peers=("registry", "rag"),
        grpc_variable="MODELHUB_GATEWAY_GRPC",
        # Tool servers and filter webhooks of the dev stack run on loopback.
        dev_settings=(("ALLOW_PRIVATE_URLS", "true"),),
    ),
    # The web console owns no data: it calls the others with the signed-in user's token.
    ServiceSpec(
        "console",
        "MODELHUB_CONSOLE_",
        "",
        "MODELHUB_CONSOLE_URL",
        peers=("registry", "puller", "rag"),
        grpc_peers=(("GATEWAY_GRPC", "chat_gateway"),),
        migrates=False,
    ),
)


def service_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


@dataclass(frozen=True)
class InfraEndpoints:
    """How services reach the shared infrastructure (secrets included: never print this)."""

    nats_url: str
    #: Superuser URL of the ``postgres`` database; each service gets its own database on that server.
    postgres_admin_url: str
    s3: S3Endpoint
    jwt_secret: str

    def __repr__(self) -> str:
        return f"InfraEndpoints(nats_url={self.nats_url!r}, s3={self.s3!r}, <secrets redacted>)"

    def database_url(self, dbname: str) -> str:
        return databases.database_url(self.postgres_admin_url, dbname)


def service_environment(
    spec: ServiceSpec,
    *,
    ports: Mapping[str, int],
    infra: InfraEndpoints,
    log_level: str = "INFO",
    workdir: Path | None = None,
) -> dict[str, str]:
    """Every ``MODELHUB_<SVC>_*`` setting the dev stack gives ``spec``'s process; ``workdir`` (the service's
    state directory) is where its ``local_dirs`` go."""
    prefix = spec.env_prefix
    env = {
        f"{prefix}HOST": LOOPBACK,
        f"{prefix}PORT": str(ports[spec.name]),
        f"{prefix}NATS_URL": infra.nats_url,
        f"{prefix}JWT_SECRET": infra.jwt_secret,
        f"{prefix}S3_ENDPOINT": infra.s3.endpoint,
        f"{prefix}S3_ACCESS_KEY": infra.s3.access_key,
        f"{prefix}S3_SECRET_KEY": infra.s3.secret_key,
        f"{prefix}S3_SECURE": "true" if infra.s3.secure else "false",
        f"{prefix}LOG_LEVEL": log_level,
    }
    if spec.database:
        env[f"{prefix}DATABASE_URL"] = infra.database_url(spec.database)
    if spec.grpc_variable:
        env[f"{prefix}GRPC_PORT"] = str(ports[f"{spec.name}_grpc"])
    for setting, peer in spec.grpc_peers:
        env[f"{prefix}{setting}"] = f"{LOOPBACK}:{ports[f'{peer}_grpc']}"
    env.update({f"{prefix}{setting}": value for setting, value in spec.dev_settings})
    for peer, variable in spec.peer_env_names.items():
        env[variable] = service_url(ports[peer])
    if workdir is not None:
        for setting, subdirectory in spec.local_dirs:
            env[f"{prefix}{setting}"] = str(workdir / subdirectory)
    return env


class ServiceProcess(ManagedServer):
    """A service started detached with its dev-stack environment; ready when ``GET /readyz`` is 200."""

    start_timeout = 90.0
    stop_timeout = 15.0

    def __init__(
        self,
        spec: ServiceSpec,
        workdir: Path,
        *,
        ports: Mapping[str, int],
        env: Mapping[str, str],
        log_path: Path,
        pid_path: Path,
        name: str | None = None,
    ) -> None:
        """``name``: the component's name when it is not the service's (a second replica, ``registry-2``)."""
        super().__init__(name or spec.name, workdir, log_path=log_path, pid_path=pid_path)
        self.spec = spec
        self.port = ports[spec.name]
        self._ports = tuple(ports[name] for name in spec.port_names)
        self._env = dict(env)

    @property
    def url(self) -> str:
        return service_url(self.port)

    def is_installed(self) -> bool:
        """True if ``python -m modelhub_<name>`` can run in this environment."""
        try:
            return importlib.util.find_spec(f"{self.spec.module}.__main__") is not None
        except ImportError:
            return False

    def _argv(self, command: str) -> list[str]:
        return [sys.executable, "-m", self.spec.module, command]

    def command(self) -> list[str]:
        return self._argv("serve")

    def owns(self, cmdline: list[str]) -> bool:
        # Another invocation may have started it through a differently named link to the same Python.
        return cmdline[1:] == self.command()[1:] and os.path.realpath(cmdline[0]) == os.path.realpath(sys.executable)

    def ports(self) -> Sequence[int]:
        return self._ports

    def environment(self) -> Mapping[str, str]:
        return {**os.environ, **self._env}

    def is_healthy(self) -> bool:
        return http_ok(f"{self.url}/readyz")

    def migrate(self) -> None:
        """Run ``python -m modelhub_<name> migrate`` to completion, output appended to the service log."""
        if not self.spec.migrates:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    self._argv("migrate"),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=dict(self.environment()),
                    timeout=_MIGRATE_TIMEOUT_SECONDS,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise self._failure(f"migrations did not finish within {_MIGRATE_TIMEOUT_SECONDS} s") from exc
            except OSError as exc:
                raise DevstackError(f"{self.name}: could not run migrations: {exc.strerror}") from exc
        if result.returncode != 0:
            raise self._failure(f"migrations failed with exit code {result.returncode}")
