"""A Prometheus server (Debian's ``prometheus``) that scrapes the services' ``/metrics``.

Targets come from a ``file_sd`` file Prometheus watches, so they can be set after it started (tests start
services on free ports later): :meth:`PrometheusServer.set_targets`. The HTTP API is used to read what it
scraped (:meth:`PrometheusServer.query`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from modelhub_devstack.binaries import system_binary
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK, pick_free_port
from modelhub_devstack.server import ManagedServer, http_ok

#: The job every file-discovered target belongs to.
JOB = "modelhub"


class PrometheusServer(ManagedServer):
    """``prometheus`` with its TSDB under ``workdir``, listening on 127.0.0.1 only.

    ``scrape_interval`` is short by default so that tests see a scrape within a second or two; the dev
    stack may pass the production-like 15 s.
    """

    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        scrape_interval: str = "1s",
        name: str = "prometheus",
    ) -> None:
        super().__init__(name, workdir)
        self.port = port if port is not None else pick_free_port()
        self.scrape_interval = scrape_interval
        self.config_path = workdir / "prometheus.yml"
        self.targets_path = workdir / "targets.json"
        self.data_dir = workdir / "data"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        binary = system_binary("prometheus", apt_package="prometheus")
        return [
            str(binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_path.exists():
            self.targets_path.write_text("[]\n")
        # JSON is valid YAML; json.dumps keeps paths correctly quoted without a YAML dependency.
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_path)], "refresh_interval": "1s"}],
                }
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def is_healthy(self) -> bool:
        return http_ok(f"{self.url}/-/ready")

    # --- targets and queries --------------------------------------------------------------------------

    def set_targets(self, targets: Mapping[str, str]) -> None:
        """Scrape these ``{service name: "host:port"}`` targets (replacing the previous set); each series
        gets a ``service_instance`` label with the name."""
        groups = [{"targets": [address], "labels": {"service_instance": name}} for name, address in targets.items()]
        self.workdir.mkdir(parents=True, exist_ok=True)
        staged = self.targets_path.with_suffix(".tmp")
        staged.write_text(json.dumps(groups) + "\n")
        staged.replace(self.targets_path)  # atomic: Prometheus never reads half a file

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise DevstackError(f"prometheus query {promql!r} failed: {body.get('error', response.text)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls ``promql`` until it returns at least one sample, then returns them; raises on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise DevstackError(f"prometheus: {promql!r} returned nothing within {timeout:g} s")
            time.sleep(0.25)
