"""Typed settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix (``MODELHUB_REGISTRY_`` ...).
URLs and secrets are required: nothing falls back to a silent default outside the dev stack, which sets
them all explicitly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelhub_common.cpus import available_cpus


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set ``model_config`` with their env prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to (loopback in dev).")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    nats_url: str = Field(
        description="NATS server URL, e.g. nats://127.0.0.1:4222; for a cluster, every node's URL, comma-separated."
    )
    jwt_secret: SecretStr = Field(min_length=32, description="HS256 key for bearer tokens.")
    jwt_issuer: str = "modelhub"
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="Time in-flight work gets on SIGTERM.")
    stream_replicas: int = Field(
        1, ge=1, le=5, description="Replicas of the JetStream streams this service provisions (3 on a NATS cluster)."
    )


class DatabaseSettings(BaseSettings):
    """Mixin for services that own a PostgreSQL database."""

    database_url: SecretStr = Field(description="postgresql://user:password@host:port/dbname")
    database_pool_min: int = Field(1, ge=0, description="Connections each pool keeps open, per worker process.")
    database_pool_max: int = Field(
        10,
        ge=1,
        description="Most connections each pool may hold, per worker process: a replica with several workers "
        "holds up to workers x this (RAG has two pools, so twice that).",
    )
    database_pool_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Longest a request waits for a database connection before it is answered 503 with "
        "Retry-After: while PostgreSQL is down requests fail this fast instead of hanging, and come back by "
        "themselves once it is up.",
    )
    outbox_step_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest one statement of the outbox relay's own database session may take. A session "
        "that stays silent longer (a half-open connection after a restart or failover) is dropped and its "
        "server process ended, so events keep flowing instead of waiting behind it.",
    )


class ObjectStoreSettings(BaseSettings):
    """Mixin for services that use the S3 store (MinIO in production)."""

    s3_endpoint: str = Field(description="host:port of the S3 API, without scheme.")
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_secure: bool = Field(False, description="Use https to reach the S3 API.")
    s3_region: str = "us-east-1"


class WorkerSettings(BaseSettings):
    """Mixin for HTTP services that can run several worker processes on one port."""

    workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        le=64,
        description="Worker processes serving the HTTP port, each with its own event loop, database pools and "
        "NATS connection (default: the CPUs available to the process, from its affinity and cgroup quota). "
        "1 runs the service in the serving process itself.",
    )
