"""Values passed between the service layer and the model backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

Role = Literal["system", "user", "assistant"]


class ContextMode(Enum):
    """Which earlier answers a model sees (see :func:`modelhub_chat_gateway.domain.conversation.history_for`)."""

    SHARED = "shared"
    PER_MODEL = "per_model"


@dataclass(frozen=True)
class ImageData:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class PromptMessage:
    """One message as a backend receives it."""

    role: Role
    content: str
    images: tuple[ImageData, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class BackendWarning:
    """Something the user should know about how the answer was produced (a stable code and a sentence)."""

    code: str
    message: str


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer: text, and on the last one the finish reason and usage. A backend may also
    send a chunk that only carries a warning (before its first text)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    warning: BackendWarning | None = None


@dataclass(frozen=True)
class Citation:
    knowledge_id: str
    file_id: str
    file_name: str
    text: str
    score: float
    page: int = 0
    start_offset: int = 0
    end_offset: int = 0


@dataclass(frozen=True)
class BackendRequest:
    """What a backend is asked: the upstream model name, the full prompt and the merged parameters."""

    model: str
    messages: tuple[PromptMessage, ...]
    params: dict[str, object] = field(default_factory=dict)
