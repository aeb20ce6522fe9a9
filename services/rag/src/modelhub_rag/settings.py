"""Settings of the rag service, read from ``MODELHUB_RAG_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_RAG_"


class RagSettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """Embeds knowledge files into PostgreSQL + pgvector and serves retrieval with citations."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8083, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-knowledge", description="S3 bucket this service owns.")
    registry_url: str | None = Field(None, description="Base URL of the registry service.")
