"""Settings of the web console, read from ``MODELHUB_CONSOLE_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MODELHUB_CONSOLE_"


class ConsoleSettings(BaseSettings):
    """The web console: the Models workspace and two-model chat in a browser. It owns no data: every page calls
    the registry, the chat gateway and the puller with the signed-in user's bearer token."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to (loopback unless told).")
    port: int = Field(8085, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    registry_url: str = Field(description="Base URL of the registry, e.g. http://registry:8081.")
    gateway_grpc: str = Field(description="host:port of the chat gateway's gRPC service.")
    puller_url: str = Field("", description="Base URL of the puller; empty: no pulls from the console.")
    rag_url: str = Field("", description="Base URL of the rag service; empty: no Knowledge pages.")
    prod: bool = Field(False, description="Production: session cookies are marked Secure (HTTPS only).")
    session_ttl_seconds: int = Field(
        8 * 3600, ge=60, description="A session ends this long after sign-in (or earlier, when its token expires)."
    )
    max_sessions: int = Field(100_000, ge=1, description="Sessions kept in memory; the oldest are dropped first.")
    page_size: int = Field(24, ge=1, le=200, description="Model cards per workspace page.")
    request_timeout_seconds: float = Field(15, gt=0, description="Timeout of calls to the registry, puller and rag.")
    max_upload_bytes: int = Field(50_000_000, ge=1, description="Largest import file the console accepts.")
    max_knowledge_file_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest knowledge file the console passes on to the rag service."
    )
    max_image_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest image a chat message may carry (the gateway has its own limit)."
    )
    max_images: int = Field(4, ge=0, le=16, description="Images one chat message may carry.")
    shutdown_grace_seconds: float = Field(5.0, ge=0, description="Time in-flight requests get on SIGTERM.")
