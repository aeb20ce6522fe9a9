"""A model file resolved for one caller: the chain, the merged parameters and where it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Backend = Literal["ollama", "openai", "local"]


@dataclass(frozen=True)
class ModelLocation:
    """Where the base model runs: an Ollama/OpenAI-compatible server, or a GGUF blob in the model store."""

    backend: Backend
    upstream_model: str
    url: str | None = None
    # Sent as a bearer token to OpenAI-compatible servers; never logged.
    api_key: str | None = field(default=None, repr=False)
    store_bucket: str | None = None
    model_digest: str | None = None
    #: The chat template recorded when the model was stored (Ollama's Go template layer, or Jinja); the local
    #: backend uses it when the GGUF carries none.
    chat_template: str | None = field(default=None, repr=False)
    #: The context the model was trained for (from its GGUF), when known.
    context_length: int | None = None


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    name: str
    base_model_id: str
    source: str
    #: The model asked for first, its base last.
    chain: tuple[str, ...]
    location: ModelLocation
    #: Merged by the registry (model file > the files it is built on > base defaults).
    params: dict[str, Any] = field(default_factory=dict)
    vision: bool = False
    knowledge_ids: tuple[str, ...] = ()
    hidden: bool = False
    enabled: bool = True
    #: The model file's tool servers (``meta.toolIds``), its filters (``filterIds`` then ``defaultFilterIds``,
    #: each once) and its actions (``actionIds``).
    tool_ids: tuple[str, ...] = ()
    filter_ids: tuple[str, ...] = ()
    action_ids: tuple[str, ...] = ()

    @property
    def system_template(self) -> str | None:
        value = self.params.get("system")
        return value if isinstance(value, str) and value.strip() else None

    def with_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Request overrides sit on top of the registry's merge (highest precedence)."""
        merged = dict(self.params)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return merged


@dataclass(frozen=True)
class ModelListing:
    """One entry of the model selector."""

    id: str
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    avatar_url: str = ""
    vision: bool = False
    citations: bool = False
    file_upload: bool = False
    suggestion_prompts: tuple[tuple[str, str, str], ...] = ()
    hidden: bool = False
    enabled: bool = True
    base_model_id: str = ""
    source: str = ""
    owned_by: str = ""
    action_ids: tuple[str, ...] = ()
