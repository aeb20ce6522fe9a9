"""What a turn reports while it runs, in order: turn started; per model answer started, citations, warnings,
deltas, then done or error; finally turn done. Entrypoints map these to ChatEvent messages."""

from __future__ import annotations

from dataclasses import dataclass

from modelhub_chat_gateway.domain.chat_types import Citation, Usage


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
class TurnDone:
    conversation_id: str
    current_message_id: str


TurnEvent = TurnStarted | AnswerStarted | Delta | CitationsFound | TurnWarning | AnswerDone | AnswerFailed | TurnDone
