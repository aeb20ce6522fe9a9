"""Settings of the registry service, read from ``MODELHUB_REGISTRY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_REGISTRY_"


class RegistrySettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """Owns model files, base models, users and access; emits model events through a transactional outbox."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8081, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-avatars", description="S3 bucket this service owns.")
