"""Model events written to the outbox in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.events import MODELS, EventEnvelope, new_envelope
from modelhub_common.outbox import enqueue
from modelhub_registry.domain.model_file import ModelFile

SOURCE = "registry"
MODEL_EVENTS = (
    "created",
    "updated",
    "deleted",
    "cloned",
    "hidden",
    "unhidden",
    "enabled",
    "disabled",
    "imported",
    "restored",
    "base_model_registered",
    "base_model_removed",
)


def _actor(principal: Principal | None) -> tuple[str, str]:
    return (principal.subject, principal.role) if principal else (SOURCE, "service")


async def model_changed(
    conn: AsyncConnection[Any],
    event: str,
    model: ModelFile,
    principal: Principal | None,
    changed_fields: list[str],
) -> None:
    await enqueue(conn, *model_changed_event(event, model, principal, changed_fields))


def model_changed_event(
    event: str, model: ModelFile, principal: Principal | None, changed_fields: list[str]
) -> tuple[str, EventEnvelope]:
    """The subject and envelope of a model-file change, for :func:`enqueue` or :func:`enqueue_with`."""
    assert event in MODEL_EVENTS
    subject, role = _actor(principal)
    payload = events_pb2.ModelChanged(
        model_id=model.id,
        base_model_id=model.base_model_id or "",
        version=model.version,
        changed_fields=changed_fields,
        hidden=model.hidden,
        enabled=model.enabled,
        knowledge_ids=model.meta.knowledge_ids,
    )
    envelope = new_envelope(
        MODELS.subject(event),
        actor=subject,
        role=role,
        source=SOURCE,
        payload=payload,
        subject_ids=events_pb2.SubjectIds(model_id=model.id),
    )
    return MODELS.subject(event), envelope


async def model_deleted(conn: AsyncConnection[Any], model: ModelFile, principal: Principal) -> None:
    subject, role = _actor(principal)
    envelope = new_envelope(
        MODELS.subject("deleted"),
        actor=subject,
        role=role,
        source=SOURCE,
        payload=events_pb2.ModelDeleted(model_id=model.id, last_version=model.version),
        subject_ids=events_pb2.SubjectIds(model_id=model.id),
    )
    await enqueue(conn, MODELS.subject("deleted"), envelope)


async def base_model_event(conn: AsyncConnection[Any], event: str, model_id: str, principal: Principal | None) -> None:
    assert event in ("base_model_registered", "base_model_removed")
    subject, role = _actor(principal)
    payload = events_pb2.ModelChanged(model_id=model_id, version=1, is_base=True, enabled=True)
    envelope = new_envelope(
        MODELS.subject(event),
        actor=subject,
        role=role,
        source=SOURCE,
        payload=payload,
        subject_ids=events_pb2.SubjectIds(model_id=model_id),
    )
    await enqueue(conn, MODELS.subject(event), envelope)
