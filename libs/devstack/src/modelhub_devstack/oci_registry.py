"""An OCI distribution registry (Debian's ``docker-registry``), standing in for remote model registries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from modelhub_devstack.binaries import system_binary
from modelhub_devstack.ports import LOOPBACK, pick_free_ports
from modelhub_devstack.server import ManagedServer, http_ok


class OciRegistry(ManagedServer):
    """``docker-registry serve`` with filesystem storage under ``workdir`` and no authentication."""

    start_timeout = 15.0
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        debug_port: int | None = None,
        name: str = "oci-registry",
    ) -> None:
        super().__init__(name, workdir)
        if port is None or debug_port is None:
            picked = pick_free_ports(2)
            port = port if port is not None else picked[0]
            debug_port = debug_port if debug_port is not None else picked[1]
        self.port = port
        self.debug_port = debug_port
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "config.yml"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        binary = system_binary("docker-registry", apt_package="docker-registry")
        return [str(binary), "serve", str(self.config_path)]

    def ports(self) -> Sequence[int]:
        return (self.port, self.debug_port)

    def prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # Never the package's default config (port 5000, htpasswd auth). JSON is valid YAML, and writing
        # it with json.dumps keeps paths correctly quoted without a YAML dependency.
        config = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": f"{LOOPBACK}:{self.port}",
                "debug": {"addr": f"{LOOPBACK}:{self.debug_port}"},
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def is_healthy(self) -> bool:
        return http_ok(f"{self.url}/v2/")
