"""Settings of the puller service, read from ``MODELHUB_PULLER_*`` environment variables.

Lists and maps are JSON in the environment, e.g.
``MODELHUB_PULLER_ALLOWED_HOSTS='["registry.ollama.ai","hf.co"]'``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_PULLER_"

MIB = 1024 * 1024
GIB = 1024 * MIB
# S3 refuses multipart parts below 5 MiB (except the last one) and uploads of more than 10,000 parts.
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10_000


class PullerSettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """Downloads Ollama and Hugging Face models into the S3 store or through an Ollama server."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8082, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-models", description="S3 bucket this service owns (the model store).")
    registry_url: str | None = Field(None, description="Base URL of the registry service (informational).")

    # ---- who may pull
    pull_groups: list[str] = Field(["pullers"], description="Groups whose members may pull (admins always may).")
    admins_may_pull: bool = Field(True, description="Whether the admin role may pull without being in a group.")

    # ---- where from
    allowed_hosts: list[str] = Field(
        ["registry.ollama.ai", "hf.co", "huggingface.co"],
        description="Registry hosts (host or host:port) models may be pulled from.",
    )
    insecure_hosts: list[str] = Field([], description="Hosts that may be reached over plain http.")
    registry_mirrors: dict[str, str] = Field(
        {}, description="Base URL to use for a registry host, e.g. {'hf.co': 'https://hf-mirror.internal'}."
    )
    ollama_url: str | None = Field(None, description="Ollama server driven by pulls with target 'ollama'.")

    # ---- limits
    max_pull_bytes: int = Field(200 * GIB, ge=1, description="Largest model (all layers) one pull may fetch.")
    max_manifest_bytes: int = Field(4 * MIB, ge=1024, description="Largest manifest or config accepted.")
    store_capacity_bytes: int | None = Field(
        None,
        ge=0,
        description="Capacity of the model store (S3 has no free-space API); unset: not checked.",
    )
    free_space_margin_bytes: int = Field(
        1 * GIB, ge=0, description="Room that must stay free in the store after a pull's new blobs."
    )

    # ---- transfers
    part_size_bytes: int = Field(16 * MIB, ge=MIN_PART_SIZE, description="Ranged-GET and S3 part size.")
    parallel_parts: int = Field(4, ge=1, le=64, description="Parts of one blob downloaded at once.")
    reorder_window_parts: int = Field(
        8, ge=1, description="Parts ahead of the hashing position that may be held in memory."
    )
    part_retries: int = Field(6, ge=1, description="Tries per part before the pull fails.")
    retry_backoff_seconds: float = Field(1.0, ge=0, description="First back-off between tries; doubles each try.")
    retry_backoff_max_seconds: float = Field(30.0, ge=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    stall_timeout_seconds: float = Field(30.0, gt=0, description="A read that waits this long is retried.")
    spool_dir: Path | None = Field(
        None,
        description="Local directory where parts in flight are spooled, so that a restarted process continues"
        " them instead of fetching them again (needs room for PARALLEL_PARTS x MAX_CONCURRENT_PULLS parts);"
        " unset: a restart fetches the parts in flight again.",
    )

    share_parts: bool = Field(
        True,
        description="Whether replicas share the parts of one blob: a replica with a free pull slot (and a pull"
        " waiting for a blob another pull downloads) fetches and stores parts of the upload another replica"
        " holds; the holder verifies and completes it.",
    )
    share_poll_seconds: float = Field(
        0.5, gt=0, description="How often a replica with a free pull slot looks for an upload to help with."
    )

    abandoned_upload_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="Age after which an upload no pull holds or needs is aborted (parts freed in S3).",
    )
    upload_sweep_interval_seconds: float = Field(900.0, gt=0, description="How often abandoned uploads are swept.")

    # ---- the work queue
    max_concurrent_pulls: int = Field(2, ge=1, le=32, description="Pulls one replica runs at once.")
    work_ack_wait_seconds: float = Field(60.0, gt=0, description="Redelivery delay after a replica dies.")
    work_max_deliver: int = Field(6, ge=1, description="Deliveries of a pull request before it fails.")
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often a running pull renews its lease.")
    lease_seconds: float = Field(30.0, gt=0, description="How long a silent replica keeps a pull or blob.")

    # ---- progress
    progress_interval_seconds: float = Field(0.25, gt=0, description="Minimum gap between progress events.")
    progress_persist_seconds: float = Field(1.0, gt=0, description="How often progress is written to Postgres.")
    list_limit: int = Field(50, ge=1, le=1000, description="Default number of pulls GET /pulls returns.")

    @field_validator("allowed_hosts", "insecure_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.strip().lower() for h in hosts if h.strip()]

    @field_validator("registry_mirrors")
    @classmethod
    def _mirror_urls(cls, mirrors: dict[str, str]) -> dict[str, str]:
        for host, url in mirrors.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"mirror of {host} must be an http(s) URL, not {url!r}")
        return {host.strip().lower(): url.rstrip("/") for host, url in mirrors.items()}

    @model_validator(mode="after")
    def _consistent(self) -> PullerSettings:
        if self.lease_seconds <= self.heartbeat_seconds:
            raise ValueError("lease_seconds must be longer than heartbeat_seconds")
        if self.work_ack_wait_seconds <= self.heartbeat_seconds:
            raise ValueError("work_ack_wait_seconds must be longer than heartbeat_seconds")
        return self
