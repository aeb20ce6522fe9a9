"""Knowledge collections and their files, as the service layer sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

PrincipalType = Literal["user", "group"]
Permission = Literal["read", "write"]
FileStatus = Literal["pending", "indexing", "indexed", "failed"]
FILE_STATUSES: tuple[FileStatus, ...] = ("pending", "indexing", "indexed", "failed")


@dataclass(frozen=True)
class Grant:
    principal_type: PrincipalType
    principal_id: str
    permission: Permission


@dataclass(frozen=True)
class Collection:
    id: str
    name: str
    description: str
    owner_id: str
    public_read: bool
    grants: tuple[Grant, ...]
    embedder: str
    dimensions: int
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True)
class FileCounts:
    """How many files of a collection are in each status, and how many chunks it holds."""

    by_status: dict[str, int] = field(default_factory=dict)
    chunks: int = 0

    @property
    def files(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class KnowledgeFile:
    id: str
    collection_id: str
    name: str
    kind: str
    content_type: str
    size_bytes: int
    sha256: str
    object_key: str
    status: FileStatus
    error_code: str | None
    error_message: str | None
    chunk_count: int
    embedder: str | None
    chunker: str | None
    generation: int
    attempts: int
    uploaded_by: str
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None
