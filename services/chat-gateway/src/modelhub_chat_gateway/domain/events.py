"""What a turn reports while it runs, in order: turn started; per model answer started, citations, warnings,
deltas, tool calls and their results, then done or error; finally turn done. Entrypoints map these to ChatEvent
messages."""

from __future__ import annotations

from dataclasses import dataclass

from modelhub_chat_gateway.domain.chat_types import Citation, Usage
from modelhub_chat_gateway.domain.tools import ToolStepRecord


@dataclass(frozen=True)
class TurnStarted:
    conversation_id: str
    user_message_id: str


@dataclass(frozen=True)
class AnswerStarted:
    model_id: str
    message_id: str
    parent_id: str


@dataclass(frozen=True)
class Delta:
    model_id: str
    text: str


@dataclass(frozen=True)
class CitationsFound:
    model_id: str
    citations: tuple[Citation, ...]


@dataclass(frozen=True)
class TurnWarning:
    model_id: str
    code: str
    message: str


@dataclass(frozen=True)
class AnswerDone:
    model_id: str
    message_id: str
    finish_reason: str
    usage: Usage
    time_to_first_token: float
    total_seconds: float


@dataclass(frozen=True)
class AnswerFailed:
    model_id: str
    message_id: str
    code: str
    message: str


@dataclass(frozen=True)
class ToolCalled:
    """The model asked for a server-side tool; the gateway is running it."""

    model_id: str
    step: ToolStepRecord


@dataclass(frozen=True)
class ToolFinished:
    """A server-side tool call ended (``step`` now carries its result)."""

    model_id: str
    step: ToolStepRecord


@dataclass(frozen=True)
class TurnDone:
    conversation_id: str
    current_message_id: str


TurnEvent = (
    TurnStarted
    | AnswerStarted
    | Delta
    | CitationsFound
    | TurnWarning
    | ToolCalled
    | ToolFinished
    | AnswerDone
    | AnswerFailed
    | TurnDone
)
