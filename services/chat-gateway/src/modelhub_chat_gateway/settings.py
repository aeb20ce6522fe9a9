"""Settings of the chat-gateway service, read from ``MODELHUB_GATEWAY_*`` environment variables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

ENV_PREFIX = "MODELHUB_GATEWAY_"


def _default_model_dir() -> Path:
    # The Kubernetes deployment mounts its model-cache volume at $XDG_CACHE_HOME.
    cache = os.environ.get("XDG_CACHE_HOME")
    return Path(cache) / "modelhub" / "models" if cache else Path(tempfile.gettempdir()) / "modelhub-gateway-models"


class ChatGatewaySettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings):
    """gRPC chat gateway: one turn fanned out to up to two models over one conversation."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8084, ge=0, le=65535, description="HTTP port (health and the OpenAI-compatible API).")
    bucket: str = Field("modelhub-chat", description="S3 bucket this service owns (images of conversations).")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port of the chat service.")
    registry_url: str = Field(description="Base URL of the registry service.")
    rag_url: str = Field(description="Base URL of the RAG service.")
    health_check_seconds: float = Field(
        5.0, gt=0, description="How often the gRPC health status is brought in line with /readyz."
    )
    max_models_per_turn: int = Field(2, ge=1, le=8, description="How many models one turn may fan out to.")
    replica_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often this replica records that it is alive and sweeps orphaned answers."
    )
    replica_stale_seconds: float = Field(
        60.0,
        gt=0,
        description="A replica not seen for this long is dead: answers it was streaming are marked interrupted.",
    )

    # The registry: model files are resolved with the caller's own token; connections (admin-only) with this.
    registry_service_token: SecretStr | None = Field(
        None,
        description="Admin token the gateway reads connection URLs and loads the model selector's catalog with "
        "(every model file, whoever owns it). "
        "Unset: the gateway signs a short-lived admin token for itself with the shared JWT secret.",
    )
    registry_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one registry call.")
    model_cache_seconds: float = Field(
        60.0, ge=0, description="How long a resolved model file stays cached (events invalidate it sooner)."
    )

    # The model selector's catalog: every model file and base model in memory, kept current by model events.
    catalog_page_size: int = Field(
        200, ge=1, le=10_000, description="Model files per request when the catalog loads (the registry caps it)."
    )
    catalog_fetch_concurrency: int = Field(
        8, ge=1, le=256, description="Changed model files the catalog fetches from the registry at once."
    )
    catalog_max_backlog: int = Field(
        1000,
        ge=1,
        description="Events waiting (queued here, or not yet delivered by NATS) beyond which the catalog stops "
        "applying them one by one and reloads everything instead.",
    )
    catalog_resync_seconds: float = Field(
        900.0,
        ge=0,
        description="How often the catalog reloads everything anyway (0: never). Catches what no event says, "
        "such as a base model refreshed by a connection sync.",
    )
    catalog_retry_seconds: float = Field(
        2.0, gt=0, description="Wait between attempts to load the catalog while the registry cannot be reached."
    )
    catalog_check_seconds: float = Field(
        5.0,
        gt=0,
        description="How often the event listener checks that its consumer still exists and NATS did not "
        "reconnect (either means events may have been missed: the catalog reloads).",
    )
    catalog_wait_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a model list waits for the catalog's first load before answering 'unavailable' "
        "(the replica reports not ready until then).",
    )
    catalog_log_seconds: float = Field(
        60.0, gt=0, description="How often the catalog logs its size and lag behind the registry."
    )

    # Backends.
    connect_timeout_seconds: float = Field(5.0, gt=0, description="Connecting to a model backend.")
    first_token_timeout_seconds: float = Field(120.0, gt=0, description="From sending a turn to its first token.")
    idle_timeout_seconds: float = Field(60.0, gt=0, description="Longest silence between two tokens.")
    default_num_ctx: int = Field(
        4096, ge=256, description="Context length assumed when neither the model file nor its base sets num_ctx."
    )
    default_max_tokens: int = Field(
        1024, ge=1, description="Tokens kept free for the answer when trimming, if max_tokens is not set."
    )

    # The local backend (GGUF models from the store, run in-process with llama.cpp).
    local_model_dir: Path = Field(
        default_factory=lambda: _default_model_dir(),
        description="Local cache of GGUF files fetched from the model store "
        "(default: $XDG_CACHE_HOME/modelhub/models, else a directory under the system's temp dir).",
    )
    local_workers: int = Field(2, ge=1, le=64, description="Worker threads generating with local models.")
    local_max_resident: int = Field(2, ge=1, description="Local models each worker keeps loaded (LRU).")
    local_threads_per_worker: int = Field(0, ge=0, description="llama.cpp threads per worker (0: cores / workers).")
    local_max_ctx: int = Field(8192, ge=256, description="Upper bound of num_ctx for local models.")
    local_stream_flush_ms: float = Field(
        20,
        ge=0,
        description="After the first token, a local model's text is handed to the event loop at most this often"
        " (0: every token). Each hand-off wakes the loop, which takes CPU from llama.cpp's threads.",
    )
    local_default_max_tokens: int = Field(
        512, ge=1, description="Answer length for local models when neither the request nor the model sets max_tokens."
    )

    # Knowledge and images.
    rag_top_k: int = Field(5, ge=1, le=50, description="Chunks retrieved per turn for models with knowledge.")
    rag_timeout_seconds: float = Field(15.0, gt=0)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest image one message may carry.")
    # Server-side tools (the tool servers a model file names in toolIds).
    tool_max_steps: int = Field(
        5, ge=1, le=50, description="Rounds of tool calls one answer may make before it must answer in text."
    )
    tool_max_parallel: int = Field(
        8, ge=1, le=256, description="Tool calls this replica runs at once (calls of one round run in parallel)."
    )
    tool_cache_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a tool server's tools and address are reused before asking the registry again.",
    )
    filter_cache_seconds: float = Field(
        30.0, ge=0, description="How long a model file's filters are reused before asking the registry again."
    )
    filter_max_text_chars: int = Field(
        200_000, ge=1, description="Longest text a filter webhook is sent (a longer one fails the filter)."
    )
    allow_private_urls: bool = Field(
        False,
        description="Let tool servers and filter webhooks live on loopback or private addresses (inside the company "
        "network; the dev stack and the tests set it). Link-local and cloud metadata addresses are refused always.",
    )
    image_url_allowed_hosts: tuple[str, ...] = Field(
        (), description="Hosts the gateway may fetch Image.url from (data: URLs are always accepted)."
    )
