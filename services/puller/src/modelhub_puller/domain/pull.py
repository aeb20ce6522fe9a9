"""Pull jobs and their layers, as the API shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Target(StrEnum):
    STORE = "store"
    OLLAMA = "ollama"


class PullState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (PullState.QUEUED, PullState.RUNNING)


ACTIVE_STATES = (PullState.QUEUED.value, PullState.RUNNING.value)


class LayerState(StrEnum):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    PRESENT = "present"  # already in the store: not downloaded again
    DOWNLOADED = "downloaded"  # fetched and verified by this pull
    FAILED = "failed"


@dataclass
class LayerProgress:
    digest: str
    media_type: str
    total_bytes: int
    completed_bytes: int = 0
    state: LayerState = LayerState.PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "media_type": self.media_type,
            "total_bytes": self.total_bytes,
            "completed_bytes": self.completed_bytes,
            "state": self.state.value,
        }


@dataclass
class PullJob:
    id: str
    model: str
    base_model_id: str
    target: Target
    state: PullState
    status: str
    requested_by: str
    total_bytes: int = 0
    completed_bytes: int = 0
    bytes_per_second: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    manifest_digest: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    layers: list[LayerProgress] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "base_model_id": self.base_model_id,
            "target": self.target.value,
            "state": self.state.value,
            "status": self.status,
            "requested_by": self.requested_by,
            "total_bytes": self.total_bytes,
            "completed_bytes": self.completed_bytes,
            "bytes_per_second": round(self.bytes_per_second, 1),
            "layers": [layer.to_json() for layer in self.layers],
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "manifest_digest": self.manifest_digest,
            "cancel_requested": self.cancel_requested,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
