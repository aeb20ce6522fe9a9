"""Settings of the chat-gateway service, read from ``MODELHUB_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_GATEWAY_"


class ChatGatewaySettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """gRPC chat gateway: one turn fanned out to up to two models over one conversation."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8084, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-chat", description="S3 bucket this service owns.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port of the chat service.")
    registry_url: str = Field(description="Base URL of the registry service.")
    rag_url: str = Field(description="Base URL of the RAG service.")
    max_models_per_turn: int = Field(2, ge=1, le=8, description="How many models one turn may fan out to.")
