"""Settings of the rag service, read from ``MODELHUB_RAG_*`` environment variables.

Every limit the service enforces is a setting here: file size, chunk size and overlap, batch sizes, how many
results a query may ask for. Changing the embedder or the chunking does not touch existing collections until
they are re-indexed (``POST /api/v1/knowledge/{id}/reindex`` or ``python -m modelhub_rag reindex``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from modelhub_common.cpus import available_cpus
from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings, WorkerSettings
from modelhub_rag.domain.chunking import ChunkingPolicy

ENV_PREFIX = "MODELHUB_RAG_"

EmbedderKind = Literal["onnx-minilm", "ollama", "openai"]


class RagSettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings, WorkerSettings):
    """Embeds knowledge files into PostgreSQL + pgvector and serves retrieval with citations."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8083, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-knowledge", description="S3 bucket this service owns.")
    registry_url: str | None = Field(None, description="Base URL of the registry service.")

    # ---- uploads
    max_file_bytes: int = Field(25 * 1024 * 1024, ge=1, description="Largest file accepted by an upload (413 above).")
    max_files_per_collection: int = Field(10_000, ge=1)
    max_name_length: int = Field(256, ge=1)
    max_description_length: int = Field(4_000, ge=0)
    max_grants: int = Field(256, ge=0)

    # ---- ingestion
    worker_enabled: bool = Field(True, description="Run ingestion workers in this process (scale by replicas).")
    ingest_concurrency: int = Field(
        2, ge=1, le=64, description="Files one replica works on at once (I/O of one overlaps embedding of another)."
    )
    ingest_ack_wait_seconds: float = Field(60, gt=0, description="Time a worker may go silent before redelivery.")
    ingest_max_deliver: int = Field(5, ge=1, description="Attempts per file before it is marked failed.")
    chunk_tokens: int = Field(128, ge=16, le=8192, description="Largest chunk, in embedder tokenizer tokens.")
    chunk_overlap_tokens: int = Field(24, ge=0, description="Tokens a chunk repeats from the one before it.")
    max_chunks_per_file: int = Field(50_000, ge=1, description="A file splitting into more chunks fails.")
    max_extracted_chars: int = Field(20_000_000, ge=1, description="A file whose text is longer fails.")

    # ---- embedding
    embedder: EmbedderKind = Field("onnx-minilm", description="onnx-minilm (local, default), ollama or openai.")
    embed_batch_size: int = Field(32, ge=1, le=2048, description="Texts per embedder call.")
    embed_threads: int = Field(
        0,
        ge=0,
        description="ONNX intra-op threads of each worker process (0: the available cores shared out among "
        "the workers).",
    )
    embedder_url: str | None = Field(None, description="Ollama or OpenAI-compatible base URL.")
    embedder_model: str | None = Field(None, description="Model name for ollama / openai embedders.")
    embedder_api_key: SecretStr | None = Field(None, description="Bearer key for an OpenAI-compatible server.")
    embedder_dimensions: int | None = Field(None, ge=1, le=2000, description="Vector size of a remote embedder.")
    embedder_timeout_seconds: float = Field(60, gt=0)

    # ---- retrieval
    default_k: int = Field(5, ge=1)
    max_k: int = Field(50, ge=1, description="Most results one query may ask for.")
    max_query_chars: int = Field(4_000, ge=1)
    max_knowledge_ids: int = Field(32, ge=1, description="Most collections one retrieve call may search.")
    candidates_per_ranker: int = Field(50, ge=1, description="Chunks each ranker (vector, text) proposes.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")
    hnsw_ef_search: int = Field(100, ge=1, le=1000, description="HNSW search breadth (recall vs latency).")
    text_common_fraction: float = Field(
        0.01, gt=0, le=1, description="A word in more of all chunks than this does not select text candidates alone."
    )

    # ---- events in
    consume_model_events: bool = Field(True, description="Record which models use which collections.")
    object_sweep_seconds: float = Field(30, gt=0, description="How often deleted files' objects are removed.")

    def onnx_threads(self) -> int:
        """ONNX intra-op threads for this worker: the setting, else (0) the cores divided among the workers so
        that several workers embedding at once do not oversubscribe them (0 again for one worker: ONNX's own
        choice, one per core)."""
        if self.embed_threads or self.workers == 1:
            return self.embed_threads
        return max(1, available_cpus() // self.workers)

    @model_validator(mode="after")
    def _check(self) -> RagSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_tokens")
        if self.default_k > self.max_k:
            raise ValueError("default_k cannot exceed max_k")
        if self.embedder != "onnx-minilm":
            missing = [n for n in ("embedder_url", "embedder_model", "embedder_dimensions") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"the {self.embedder} embedder needs {', '.join(ENV_PREFIX + m.upper() for m in missing)}"
                )
        return self

    def chunking(self) -> ChunkingPolicy:
        return ChunkingPolicy(chunk_tokens=self.chunk_tokens, overlap_tokens=self.chunk_overlap_tokens)
