"""What the registry does with other services' events."""

from __future__ import annotations

import logging

from modelhub.events.v1 import events_pb2
from modelhub_common.audit import RECORDED_SUBJECT
from modelhub_common.consumer import Handler, MsgContext
from modelhub_common.errors import PermanentError
from modelhub_common.events import PULLS, EventEnvelope
from modelhub_common.jetstream import ConsumerSpec
from modelhub_registry.service_layer.audit import AuditLog
from modelhub_registry.service_layer.base_models import BaseModelService

logger = logging.getLogger(__name__)

PULL_EVENTS = ConsumerSpec(
    durable="registry-pulls",
    filter_subjects=(PULLS.subject("completed"), PULLS.subject("model_deleted")),
    ack_wait=30,
    max_deliver=8,
    backoff=(1, 5, 30, 120),
    description="keeps base models in step with the models stored by the puller",
)

AUDIT_EVENTS = ConsumerSpec(
    durable="registry-audit",
    filter_subjects=(RECORDED_SUBJECT,),
    ack_wait=30,
    max_deliver=8,
    backoff=(1, 5, 30, 120),
    description="keeps the audit records of every service in the registry's audit log",
)


def audit_events_handler(audit: AuditLog, own_source: str) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        if envelope.WhichOneof("payload") != "audit_recorded":
            raise PermanentError(f"unexpected payload on {context.subject}")
        if envelope.source == own_source:
            return  # written with the change or the answer it records
        if not await audit.store_event(envelope):
            logger.debug("audit record already stored", extra={"event_id": envelope.id})

    return handle


def pull_events_handler(base_models: BaseModelService) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        kind = envelope.WhichOneof("payload")
        if kind == "pull_completed":
            completed = envelope.pull_completed
            if not completed.model:
                raise PermanentError("pull_completed has no model name")
            if completed.target == events_pb2.PULL_TARGET_OLLAMA:
                # The model now lives on an Ollama server; that server's connection lists it on its next sync.
                logger.info(
                    "pull into Ollama finished; left to the connection sync", extra={"model_id": completed.model}
                )
                return
            new = await base_models.register_pulled(completed)
            logger.info("pulled model registered", extra={"model_id": completed.model, "new": new})
        elif kind == "stored_model_deleted":
            deleted = envelope.stored_model_deleted
            model_id = deleted.base_model_id or deleted.model
            if not model_id:
                raise PermanentError("stored_model_deleted names no model")
            removed = await base_models.remove_local(model_id)
            logger.info("stored model deleted", extra={"model_id": model_id, "removed": removed})
        else:
            raise PermanentError(f"unexpected payload {kind!r} on {context.subject}")

    return handle
