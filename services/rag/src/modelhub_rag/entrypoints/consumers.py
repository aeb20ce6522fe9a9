"""What the rag service does with events: index uploaded files (work queue) and track models' knowledge.

``rag-ingest`` is one durable pull consumer shared by every replica (and by the ``ingest_concurrency`` loops
inside each): JetStream hands each ``file_added`` message to exactly one of them, so throughput scales by
running more replicas. ``rag-model-events`` records which model files use which collections.
"""

from __future__ import annotations

import logging

from modelhub_common.consumer import Handler, MsgContext
from modelhub_common.errors import PermanentError
from modelhub_common.events import MODELS, EventEnvelope
from modelhub_common.jetstream import ConsumerSpec
from modelhub_rag.service_layer.events import FILE_ADDED
from modelhub_rag.service_layer.ingestion import IngestionService
from modelhub_rag.service_layer.references import ReferenceService
from modelhub_rag.settings import RagSettings

logger = logging.getLogger(__name__)

MODEL_EVENTS = ConsumerSpec(
    durable="rag-model-events",
    filter_subjects=(MODELS.subject(">"),),
    ack_wait=30,
    max_deliver=8,
    backoff=(1, 5, 30, 120),
    description="records which model files use which knowledge collections",
)


def ingest_spec(settings: RagSettings) -> ConsumerSpec:
    return ConsumerSpec(
        durable="rag-ingest",
        filter_subjects=(FILE_ADDED,),
        ack_wait=settings.ingest_ack_wait_seconds,
        max_deliver=settings.ingest_max_deliver,
        backoff=(2, 10, 30, 120),
        description="indexes uploaded knowledge files (a work queue shared by all rag replicas)",
    )


def file_added_handler(ingestion: IngestionService) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        if envelope.WhichOneof("payload") != "knowledge_file_added":
            raise PermanentError(f"expected a knowledge_file_added payload, got {envelope.WhichOneof('payload')}")
        added = envelope.knowledge_file_added
        if not added.file_id:
            raise PermanentError("knowledge_file_added has no file_id")
        outcome = await ingestion.ingest(
            added.file_id, heartbeat=context.in_progress, last_attempt=context.is_last_delivery
        )
        logger.info(
            "file_added handled",
            extra={
                "file_id": added.file_id,
                "knowledge_id": added.knowledge_id,
                "outcome": outcome.value,
                "num_delivered": context.num_delivered,
            },
        )

    return handle


def model_events_handler(references: ReferenceService) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        kind = envelope.WhichOneof("payload")
        if kind == "model_changed":
            changed = envelope.model_changed
            if changed.is_base or not changed.model_id:
                return
            await references.model_changed(changed.model_id, changed.version, list(changed.knowledge_ids))
        elif kind == "model_deleted":
            deleted = envelope.model_deleted
            if deleted.model_id:
                await references.model_deleted(deleted.model_id, deleted.last_version)

    return handle
