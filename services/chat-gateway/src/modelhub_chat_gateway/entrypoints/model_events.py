"""Drops cached model resolutions when the registry says a model changed.

Every gateway replica must see every model event (each has its own cache), so this is not a durable work
queue shared by the replicas: each replica follows ``modelhub.models.v1.>`` with an ordered, ephemeral
JetStream consumer starting at new messages. Nothing needs acknowledging: dropping a cache entry is
idempotent, and the cache's TTL bounds staleness should an event be missed while NATS reconnects.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from modelhub_chat_gateway.service_layer.model_catalog import ModelCatalog
from modelhub_common.errors import PermanentError
from modelhub_common.events import MODELS, decode_envelope

logger = logging.getLogger(__name__)


class ModelEventsListener:
    def __init__(self, js: JetStreamContext, catalog: ModelCatalog) -> None:
        self._js = js
        self._catalog = catalog
        self._subscription: JetStreamContext.PushSubscription | None = None

    async def handle(self, data: bytes) -> None:
        try:
            envelope = decode_envelope(data)
        except PermanentError:
            logger.warning("ignored an undecodable model event")
            return
        payload = envelope.WhichOneof("payload")
        ids: set[str] = set()
        if payload == "model_changed":
            ids.update({envelope.model_changed.model_id, envelope.model_changed.base_model_id})
        elif payload == "model_deleted":
            ids.add(envelope.model_deleted.model_id)
        ids.discard("")
        if "base_model" in envelope.type:
            self._catalog.invalidate_connections()
        dropped = self._catalog.invalidate(ids)
        logger.debug("model event", extra={"type": envelope.type, "ids": sorted(ids), "dropped": dropped})

    async def _on_message(self, msg: Msg) -> None:
        await self.handle(msg.data)

    async def start(self) -> None:
        self._subscription = await self._js.subscribe(
            MODELS.subject(">"),
            stream=MODELS.stream,
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception as exc:  # the connection may already be draining
                logger.debug("unsubscribe failed", extra={"error": repr(exc)})
            self._subscription = None
