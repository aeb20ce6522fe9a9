"""Follows the registry's model events: drops cached model resolutions and keeps the selector catalog current.

Every gateway replica must see every model event (each holds its own cache and catalog), so this is not a
durable work queue shared by the replicas: each replica follows ``modelhub.models.v1.>`` with an ordered,
ephemeral JetStream consumer starting at new messages. Nothing needs acknowledging: dropping a cache entry
is idempotent, and the catalog applies events by model version (see
:mod:`~modelhub_chat_gateway.service_layer.selector_catalog`).

What the catalog cannot see for itself, this listener watches for, and answers with a fresh subscription
and a full reload of the catalog: a gap in the stream sequence (events gone before they reached us), the
consumer deleted on the server, a reconnect to NATS, or more than ``max_backlog`` events not yet delivered.
The subscription always comes first and the reload after it, so that no event falls between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from modelhub_chat_gateway.service_layer.model_catalog import ModelCatalog
from modelhub_chat_gateway.service_layer.selector_catalog import SelectorCatalog
from modelhub_common.errors import PermanentError
from modelhub_common.events import MODELS, decode_envelope

logger = logging.getLogger(__name__)


class ModelEventsListener:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        catalog: ModelCatalog,
        selector: SelectorCatalog,
        *,
        check_seconds: float,
        max_backlog: int,
        invalidators: Mapping[str, Callable[[], None]] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._catalog = catalog
        self._selector = selector
        self._check_seconds = check_seconds
        self._max_backlog = max_backlog
        self._subscription: JetStreamContext.PushSubscription | None = None
        # Each subscription has a generation: messages still arriving from a replaced one are not tracked.
        self._generation = 0
        self._last_seq: int | None = None
        self._undelivered = 0
        self._reconnects = 0
        self._stopped = False
        # Event type fragment ("tool_server", "filter") -> the cache it makes stale.
        self._invalidators = dict(invalidators or {})

    @property
    def last_stream_sequence(self) -> int | None:
        """The stream sequence of the newest event received on the current subscription."""
        return self._last_seq

    async def handle(self, data: bytes, *, stream_seq: int | None = None, undelivered: int = 0) -> None:
        """One event, as received (tests call this directly to redeliver old events). ``stream_seq`` and
        ``undelivered`` come from the JetStream metadata, when there is some."""
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
        for fragment, invalidate in self._invalidators.items():
            if fragment in envelope.type:
                invalidate()
        dropped = self._catalog.invalidate(ids)
        logger.debug("model event", extra={"type": envelope.type, "ids": sorted(ids), "dropped": dropped})
        if stream_seq is not None:
            self._track(stream_seq, undelivered)
        self._selector.submit(envelope)

    def _track(self, stream_seq: int, undelivered: int) -> None:
        # The consumer's filter is the stream's whole subject space, so its sequences have no holes of their own.
        if self._last_seq is not None and stream_seq > self._last_seq + 1:
            logger.warning(
                "model events were missed; reloading the model catalog",
                extra={"after": self._last_seq, "got": stream_seq},
            )
            self._selector.request_resync("gap")
        if self._last_seq is None or stream_seq > self._last_seq:
            self._last_seq = stream_seq
        self._undelivered = undelivered

    def _callback(self, generation: int) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            if generation != self._generation:
                await self.handle(msg.data)
                return
            try:
                meta = msg.metadata
            except (ValueError, IndexError, nats.errors.Error):
                await self.handle(msg.data)
                return
            await self.handle(msg.data, stream_seq=meta.sequence.stream, undelivered=meta.num_pending)

        return on_message

    async def _subscribe(self) -> None:
        self._generation += 1
        self._last_seq = None
        self._undelivered = 0
        self._subscription = await self._js.subscribe(
            MODELS.subject(">"),
            stream=MODELS.stream,
            cb=self._callback(self._generation),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )

    async def start(self) -> None:
        """Subscribes, then asks the catalog for its first load."""
        self._reconnects = self._nc.stats["reconnects"]
        await self._subscribe()
        self._selector.request_resync("start")

    async def restart(self, reason: str) -> None:
        """A new subscription and a full reload (events may have been missed)."""
        if self._stopped:
            return
        logger.warning("resubscribing to model events and reloading the model catalog", extra={"reason": reason})
        await self._unsubscribe()
        await self._subscribe()
        self._selector.request_resync(reason)

    async def watch(self, stop: asyncio.Event) -> None:
        """Checks the subscription every ``check_seconds`` until ``stop``; restarts it when it cannot be trusted."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._check_seconds)
            if stop.is_set() or self._stopped:
                return
            reason = await self._distrust()
            if reason is None:
                continue
            try:
                await self.restart(reason)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                logger.warning("cannot resubscribe to model events; will retry", extra={"error": repr(exc)})
                self._subscription = None

    async def _distrust(self) -> str | None:
        """Why the current subscription may have missed events, or None."""
        reconnects = self._nc.stats["reconnects"]
        if reconnects != self._reconnects and self._nc.is_connected:
            self._reconnects = reconnects
            return "reconnected"
        if not self._nc.is_connected:
            return None
        if self._subscription is None:
            return "not subscribed"
        if self._undelivered > self._max_backlog:
            return "behind"
        try:
            await self._subscription.consumer_info()
        except nats.js.errors.NotFoundError:
            return "consumer lost"
        except (nats.errors.Error, TimeoutError) as exc:
            logger.debug("consumer check failed", extra={"error": repr(exc)})
        return None

    async def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception as exc:  # the connection may be draining or the subscription already gone
                logger.debug("unsubscribe failed", extra={"error": repr(exc)})

    async def stop(self) -> None:
        self._stopped = True
        await self._unsubscribe()
