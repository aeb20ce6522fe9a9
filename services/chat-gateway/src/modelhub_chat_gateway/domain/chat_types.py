"""Values passed between the service layer and the model backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


class ContextMode(Enum):
    """Which earlier answers a model sees (see :func:`modelhub_chat_gateway.domain.conversation.history_for`)."""

    SHARED = "shared"
    PER_MODEL = "per_model"


@dataclass(frozen=True)
class ImageData:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class ToolDefinition:
    """A function a model may call: its name, what it does and its parameters as a JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """A call a model asked for; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolOptions:
    """What a request says about tools and the answer's format (OpenAI's fields, checked).

    ``choice`` is ``auto``, ``none`` or ``required``, or None when the request did not say; ``forced`` names the
    one function the model must call (``tool_choice: {"type": "function", ...}``)."""

    tools: tuple[ToolDefinition, ...] = ()
    choice: str | None = None
    forced: str | None = None
    parallel: bool | None = None
    response_format: dict[str, Any] | None = None

    @property
    def active(self) -> tuple[ToolDefinition, ...]:
        """The tools a backend is offered (none when ``tool_choice`` is ``none``)."""
        return () if self.choice == "none" else self.tools

    def definition(self, name: str) -> ToolDefinition | None:
        return next((t for t in self.tools if t.name == name), None)


@dataclass(frozen=True)
class PromptMessage:
    """One message as a backend receives it. An assistant message may carry the tool calls it made; a ``tool``
    message is the result of one of them (``tool_call_id``)."""

    role: Role
    content: str
    images: tuple[ImageData, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


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
    #: Complete tool calls (a backend gathers streamed fragments and sends them once, before the last chunk).
    tool_calls: tuple[ToolCall, ...] = ()


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
    tools: ToolOptions = field(default_factory=ToolOptions)
