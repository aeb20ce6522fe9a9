"""What the registry does with other services' events."""

from __future__ import annotations

import logging

from modelhub_common.consumer import Handler, MsgContext
from modelhub_common.errors import PermanentError
from modelhub_common.events import PULLS, EventEnvelope
from modelhub_common.jetstream import ConsumerSpec
from modelhub_registry.service_layer.base_models import BaseModelService

logger = logging.getLogger(__name__)

PULL_COMPLETED = ConsumerSpec(
    durable="registry-pulls-completed",
    filter_subjects=(PULLS.subject("completed"),),
    ack_wait=30,
    max_deliver=8,
    backoff=(1, 5, 30, 120),
    description="registers models pulled into the object store as base models",
)


def pull_completed_handler(base_models: BaseModelService) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        if envelope.WhichOneof("payload") != "pull_completed":
            raise PermanentError(f"expected a pull_completed payload, got {envelope.WhichOneof('payload')}")
        completed = envelope.pull_completed
        if not completed.model:
            raise PermanentError("pull_completed has no model name")
        new = await base_models.register_pulled(completed)
        logger.info("pulled model registered", extra={"model_id": completed.model, "new": new})

    return handle
