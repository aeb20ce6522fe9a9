"""Settings of the puller service, read from ``MODELHUB_PULLER_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_PULLER_"


class PullerSettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """Downloads Ollama and Hugging Face models into the S3 store or through an Ollama server."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8082, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-models", description="S3 bucket this service owns.")
    registry_url: str | None = Field(None, description="Base URL of the registry service.")
