"""Base models: what model files are built on, found through connections or pulled into the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

BaseModelSource = Literal["ollama", "openai", "local", "manual"]
ConnectionType = Literal["ollama", "openai"]


class BaseModelRecord(BaseModel):
    id: str
    name: str
    source: BaseModelSource
    connection_id: str | None = None
    capabilities: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    available: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Connection(BaseModel):
    id: str
    type: ConnectionType
    name: str
    url: str
    has_api_key: bool
    created_at: datetime
    last_synced_at: datetime | None = None
    last_error: str | None = None
