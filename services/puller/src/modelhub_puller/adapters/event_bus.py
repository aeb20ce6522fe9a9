"""The puller's live view of ``modelhub.pulls.v1.*`` on NATS, shared by its API and its workers.

One core-NATS subscription per replica (JetStream publishes are ordinary messages on the subject, so every
replica sees every pull's events without a consumer of its own). Events are fanned out to
``GET /pulls/{id}/events`` listeners by pull id, and ``cancel_requested`` events reach the workers, so a
cancel sent to any API replica stops the pull on whichever replica runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from modelhub_common import jetstream
from modelhub_common.errors import ModelhubError, PermanentError
from modelhub_common.events import EventEnvelope, decode_envelope

logger = logging.getLogger(__name__)

_QUEUE_SIZE = 256


class PullEventBus:
    def __init__(self, nc: Client, js: JetStreamContext, *, subject: str, cancel_subject: str) -> None:
        self._nc = nc
        self._js = js
        self._subject = subject
        self._cancel_type = cancel_subject.removeprefix("modelhub.")
        self._subscription: Subscription | None = None
        self._listeners: dict[str, set[asyncio.Queue[EventEnvelope]]] = {}
        self._cancel_handlers: list[Callable[[str], None]] = []

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(self._subject, cb=self._on_message)

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None

    def on_cancel(self, handler: Callable[[str], None]) -> None:
        self._cancel_handlers.append(handler)

    @contextlib.contextmanager
    def listen(self, pull_id: str) -> Iterator[asyncio.Queue[EventEnvelope]]:
        queue: asyncio.Queue[EventEnvelope] = asyncio.Queue(_QUEUE_SIZE)
        self._listeners.setdefault(pull_id, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(pull_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[pull_id]

    async def _on_message(self, msg: Msg) -> None:
        try:
            envelope = decode_envelope(msg.data)
        except PermanentError:
            return
        pull_id = envelope.subject_ids.pull_id
        if envelope.type == self._cancel_type:
            for handler in self._cancel_handlers:
                handler(pull_id)
        for queue in self._listeners.get(pull_id, ()):
            if queue.full():
                # A slow reader loses the oldest progress, never the final event that follows.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(envelope)

    async def publish(self, subject: str, envelope: EventEnvelope) -> None:
        """Publishes directly (progress only; state-changing events go through the outbox)."""
        try:
            await jetstream.publish(self._js, subject, envelope, timeout=2.0)
        except ModelhubError as exc:
            logger.debug("progress event not published", extra={"error": exc.message})
