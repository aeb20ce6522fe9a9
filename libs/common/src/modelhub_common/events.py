"""Event envelopes and subjects.

Subjects are ``modelhub.<area>.v1.<past_tense_event>``; every payload is an
:class:`modelhub.events.v1.events_pb2.EventEnvelope`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message

from modelhub.events.v1 import events_pb2
from modelhub_common.errors import PermanentError

EventEnvelope = events_pb2.EventEnvelope
Actor = events_pb2.Actor
SubjectIds = events_pb2.SubjectIds

SUBJECT_ROOT = "modelhub"
DEAD_LETTER_PREFIX = "modelhub.dlq"


@dataclass(frozen=True)
class StreamArea:
    """One stream per owning service: its name and subject space."""

    area: str
    stream: str

    @property
    def subjects(self) -> list[str]:
        return [f"{SUBJECT_ROOT}.{self.area}.v1.>"]

    def subject(self, event: str) -> str:
        return f"{SUBJECT_ROOT}.{self.area}.v1.{event}"


MODELS = StreamArea("models", "MODELHUB_MODELS")
PULLS = StreamArea("pulls", "MODELHUB_PULLS")
KNOWLEDGE = StreamArea("knowledge", "MODELHUB_KNOWLEDGE")
AUDIT = StreamArea("audit", "MODELHUB_AUDIT")


def new_envelope(
    subject: str,
    *,
    actor: str,
    role: str,
    source: str,
    payload: Message,
    subject_ids: SubjectIds | None = None,
    trace_id: str = "",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    """Builds an envelope whose ``type`` is the subject without the ``modelhub.`` root."""
    envelope = EventEnvelope(
        id=event_id or str(uuid.uuid4()),
        type=subject.removeprefix(f"{SUBJECT_ROOT}."),
        actor=Actor(subject=actor, role=role),
        source=source,
        trace_id=trace_id,
    )
    envelope.occurred_at.FromDatetime(occurred_at or datetime.now(UTC))
    if subject_ids is not None:
        envelope.subject_ids.CopyFrom(subject_ids)
    field = _payload_field(payload)
    getattr(envelope, field).CopyFrom(payload)
    return envelope


def decode_envelope(data: bytes) -> EventEnvelope:
    """Parses bytes from the wire; undecodable data is a permanent error (dead-lettered, never retried)."""
    envelope = EventEnvelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise PermanentError(f"message is not an EventEnvelope: {exc}", code="bad_envelope") from exc
    if not envelope.id or not envelope.type:
        raise PermanentError("envelope has no id or type", code="bad_envelope")
    return envelope


def _payload_field(payload: Message) -> str:
    oneof = EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"]
    for field in oneof.fields:
        if field.message_type is payload.DESCRIPTOR:
            return str(field.name)
    raise TypeError(f"{type(payload).__name__} is not an EventEnvelope payload")
