"""The durable pull-consumer loop every service runs its event handlers in.

A handler receives the decoded :class:`EventEnvelope` and a :class:`MsgContext`. What it does decides the
fate of the message:

* returns: the message is acked (``ack_sync``, so the loop knows the ack landed);
* raises :class:`TransientError` or any other exception: ``nak`` with the consumer's back-off delay for that
  delivery, so the server redelivers it later;
* raises :class:`PermanentError` (an undecodable envelope counts as one): the message is dead-lettered,
  then terminated;
* fails on its last allowed delivery (``num_delivered >= max_deliver``): dead-lettered, then terminated,
  so nothing is dropped silently.

Dead-lettering republishes the original bytes on ``modelhub.dlq.<original subject>`` (the ``MODELHUB_DLQ``
stream) with ``Modelhub-Dlq-*`` headers saying where the message came from and why it failed. Its
``Nats-Msg-Id`` is derived from stream, consumer and stream sequence, so a repeated attempt is stored once.
If the dead-letter publish fails the message is nak-ed, never terminated. (On its last delivery the server
then stops delivering it and emits a ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES`` advisory; the message
itself stays in a limits-retention stream for recovery.)

Every message may be delivered more than once (a lost ack, a redelivery after ``ack_wait``, a replica
stopping mid-batch), so **handlers must be idempotent**.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from modelhub_common import tracing
from modelhub_common.errors import DependencyError, ModelhubError, PermanentError, TransientError
from modelhub_common.events import DEAD_LETTER_PREFIX, EventEnvelope, decode_envelope
from modelhub_common.jetstream import MSG_ID_HEADER, ConsumerSpec, dead_letter_subject, ensure_consumer
from modelhub_common.metrics import ServiceMetrics

__all__ = [
    "DLQ_CONSUMER_HEADER",
    "DLQ_DELIVERIES_HEADER",
    "DLQ_ERROR_CODE_HEADER",
    "DLQ_ERROR_HEADER",
    "DLQ_MSG_ID_HEADER",
    "DLQ_SEQUENCE_HEADER",
    "DLQ_STREAM_HEADER",
    "DLQ_SUBJECT_HEADER",
    "Consumer",
    "Handler",
    "MsgContext",
    "run_consumer",
]

logger = logging.getLogger(__name__)

DLQ_SUBJECT_HEADER = "Modelhub-Dlq-Subject"
DLQ_STREAM_HEADER = "Modelhub-Dlq-Stream"
DLQ_SEQUENCE_HEADER = "Modelhub-Dlq-Sequence"
DLQ_CONSUMER_HEADER = "Modelhub-Dlq-Consumer"
DLQ_DELIVERIES_HEADER = "Modelhub-Dlq-Deliveries"
DLQ_ERROR_CODE_HEADER = "Modelhub-Dlq-Error-Code"
DLQ_ERROR_HEADER = "Modelhub-Dlq-Error"
DLQ_MSG_ID_HEADER = "Modelhub-Dlq-Msg-Id"

# The connection is gone for good (closed, or drained by a shutdown that did not stop this loop first).
_CONNECTION_GONE = (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError)
_MAX_ERROR_HEADER_CHARS = 1000
_UNEXPECTED_ERROR_CODE = "unhandled_exception"


@dataclass(frozen=True)
class MsgContext:
    """What a handler may know about the message besides its envelope.

    Unit tests of handlers may build one without a message (``in_progress`` is then a no-op).
    """

    subject: str
    headers: Mapping[str, str]
    stream: str
    consumer: str
    stream_sequence: int
    num_delivered: int
    max_deliver: int
    _msg: Msg | None = field(default=None, repr=False, compare=False)

    @property
    def is_last_delivery(self) -> bool:
        """True when a failure now dead-letters the message instead of retrying it."""
        return self.num_delivered >= self.max_deliver

    async def in_progress(self) -> None:
        """Restarts the ``ack_wait`` clock. Long handlers (downloads, indexing) call it periodically."""
        if self._msg is None:
            return
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:
            logger.warning(
                "could not extend the ack deadline",
                extra={"stream": self.stream, "stream_seq": self.stream_sequence, "error": repr(exc)},
            )


Handler = Callable[[EventEnvelope, MsgContext], Awaitable[None]]


class Consumer:
    """Runs ``handler`` for every message of a durable pull consumer until ``stop`` is set.

    ``run`` provisions the consumer (idempotently) before pulling, so a replica can start before or after
    the others. Messages are fetched ``batch`` at a time and handled one after another in stream order;
    keep ``batch`` times the typical handler duration well under ``spec.ack_wait``.

    On ``stop`` the loop finishes the message in flight, nak-s (without delay) the rest of its batch so
    another replica takes them at once, and returns; the caller then drains the connection. A fetch in
    progress is allowed to end (at most ``fetch_timeout``), which avoids leaving a pull request on the
    server that would hand a message to a consumer that is going away.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        batch: int = 1,
        fetch_timeout: float = 2.0,
        ack_timeout: float = 5.0,
        dead_letter_timeout: float = 5.0,
        retry_interval: float = 1.0,
        dead_letter_prefix: str = DEAD_LETTER_PREFIX,
        metrics: ServiceMetrics | None = None,
        lag_cache_seconds: float = 5.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if fetch_timeout <= 0:
            raise ValueError("fetch_timeout must be positive")
        self._js = js
        self._stream = stream
        self._spec = spec
        self._handler = handler
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._ack_timeout = ack_timeout
        self._dead_letter_timeout = dead_letter_timeout
        self._retry_interval = retry_interval
        self._dead_letter_prefix = dead_letter_prefix
        self._log_extra: dict[str, Any] = {"stream": stream, "consumer": spec.durable}
        self._metrics = metrics.consumer(spec.durable) if metrics is not None else None
        self._lag_cache_seconds = lag_cache_seconds
        self._lag_read_at: float | None = None
        if metrics is not None:
            metrics.on_scrape(f"consumer:{spec.durable}", self._read_lag)

    async def _read_lag(self) -> None:
        """Consumer info from JetStream, at most once per ``lag_cache_seconds`` however often Prometheus scrapes."""
        if self._metrics is None:
            return
        now = time.monotonic()
        if self._lag_read_at is not None and now - self._lag_read_at < self._lag_cache_seconds:
            return
        self._lag_read_at = now
        try:
            info = await self._js.consumer_info(self._stream, self._spec.durable)
        except nats.js.errors.NotFoundError:
            return  # not provisioned yet: the loop creates it on start
        self._metrics.pending.set(info.num_pending or 0)
        self._metrics.ack_pending.set(info.num_ack_pending or 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Pulls and handles messages until ``stop`` is set.

        Raises :class:`DependencyError` if the NATS connection is closed for good, and
        :class:`~modelhub_common.errors.ConfigurationError` if the server rejects the consumer's config.
        Transient NATS trouble (timeouts, reconnects, a deleted consumer) is logged and retried.
        """
        subscription: JetStreamContext.PullSubscription | None = None
        logger.info("consumer starting", extra=self._log_extra)
        try:
            while not stop.is_set():
                if subscription is None:
                    subscription = await self._subscribe(stop)
                    if subscription is None:
                        continue
                try:
                    messages = await subscription.fetch(self._batch, timeout=self._fetch_timeout)
                except TimeoutError:
                    continue  # nothing to do, or reconnecting: both are normal
                except _CONNECTION_GONE as exc:
                    raise DependencyError("NATS connection closed under the consumer") from exc
                except nats.errors.Error as exc:
                    logger.warning("fetch failed; re-binding", extra={**self._log_extra, "error": repr(exc)})
                    await _unsubscribe(subscription)
                    subscription = None
                    await _sleep_unless_stopped(stop, self._retry_interval)
                    continue
                for index, msg in enumerate(messages):
                    if stop.is_set():
                        await self._release(messages[index:])
                        break
                    await self._process(msg)
        finally:
            if subscription is not None:
                await _unsubscribe(subscription)
            logger.info("consumer stopped", extra=self._log_extra)

    async def _subscribe(self, stop: asyncio.Event) -> JetStreamContext.PullSubscription | None:
        try:
            await ensure_consumer(self._js, self._stream, self._spec)
            return await self._js.pull_subscribe_bind(durable=self._spec.durable, stream=self._stream)
        except _CONNECTION_GONE as exc:
            raise DependencyError("NATS connection closed under the consumer") from exc
        except DependencyError as exc:
            if isinstance(exc.__cause__, _CONNECTION_GONE):
                raise
            logger.warning("cannot bind consumer yet", extra={**self._log_extra, "error": exc.message})
            await _sleep_unless_stopped(stop, self._retry_interval)
            return None

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        ctx = MsgContext(
            subject=msg.subject,
            headers=MappingProxyType(dict(msg.headers or {})),
            stream=meta.stream,
            consumer=meta.consumer,
            stream_sequence=meta.sequence.stream,
            num_delivered=meta.num_delivered,
            max_deliver=self._spec.max_deliver,
            _msg=msg,
        )
        extra = {
            **self._log_extra,
            "subject": ctx.subject,
            "stream_seq": ctx.stream_sequence,
            "num_delivered": ctx.num_delivered,
        }
        if self._metrics is not None:
            self._metrics.delivered.inc()
        started = time.perf_counter()
        with tracing.consume_span(ctx.subject, ctx.headers, ctx.consumer) as span:
            await self._handle(msg, ctx, extra, started, span)

    async def _handle(
        self, msg: Msg, ctx: MsgContext, extra: dict[str, Any], started: float, span: tracing.Span | None
    ) -> None:
        try:
            envelope = decode_envelope(msg.data)
            extra.update(event_id=envelope.id, event_type=envelope.type)
            await self._handler(envelope, ctx)
        except PermanentError as exc:
            logger.error("permanent failure", extra={**extra, "error_code": exc.code, "error": exc.message})
            tracing.mark_failed(span, exc.code)
            await self._give_up(msg, ctx, exc.code, exc.message, extra)
        except asyncio.CancelledError:
            # Hard stop: hand the message back at once rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, ModelhubError) else _UNEXPECTED_ERROR_CODE
            text = exc.message if isinstance(exc, ModelhubError) else f"{type(exc).__name__}: {exc}"
            failure_extra = {**extra, "error_code": code, "error": text}
            tracing.mark_failed(span, code)
            if isinstance(exc, TransientError):
                logger.warning("transient failure", extra=failure_extra)
            else:
                logger.exception("handler raised an unexpected exception", extra=failure_extra)
            if ctx.is_last_delivery:
                await self._give_up(msg, ctx, code, text, extra)
            else:
                await self._nak(msg, ctx, extra)
        else:
            await self._ack(msg, extra)
        finally:
            if self._metrics is not None:
                self._metrics.handle_duration.observe(time.perf_counter() - started)

    async def _ack(self, msg: Msg, extra: Mapping[str, Any]) -> None:
        try:
            await msg.ack_sync(timeout=self._ack_timeout)
            if self._metrics is not None:
                self._metrics.acked.inc()
        except (nats.errors.Error, TimeoutError) as exc:
            # The work is done; the server will redeliver and the idempotent handler will no-op.
            logger.warning("ack not confirmed; expect a redelivery", extra={**extra, "error": repr(exc)})

    async def _give_up(self, msg: Msg, ctx: MsgContext, code: str, text: str, extra: Mapping[str, Any]) -> None:
        if await self._dead_letter(msg, ctx, code, text, extra):
            if self._metrics is not None:
                self._metrics.dead_lettered.inc()
            await self._settle(msg.term(), "term", extra)
        else:
            await self._nak(msg, ctx, extra)

    async def _nak(self, msg: Msg, ctx: MsgContext, extra: Mapping[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.naked.inc()
        await self._settle(msg.nak(delay=self._spec.retry_delay(ctx.num_delivered)), "nak", extra)

    async def _dead_letter(self, msg: Msg, ctx: MsgContext, code: str, text: str, extra: Mapping[str, Any]) -> bool:
        headers = {k: v for k, v in ctx.headers.items() if not k.lower().startswith("nats-")}
        original_id = ctx.headers.get(MSG_ID_HEADER)
        if original_id:
            headers[DLQ_MSG_ID_HEADER] = original_id
        headers.update(
            {
                DLQ_SUBJECT_HEADER: ctx.subject,
                DLQ_STREAM_HEADER: ctx.stream,
                DLQ_SEQUENCE_HEADER: str(ctx.stream_sequence),
                DLQ_CONSUMER_HEADER: ctx.consumer,
                DLQ_DELIVERIES_HEADER: str(ctx.num_delivered),
                DLQ_ERROR_CODE_HEADER: code,
                DLQ_ERROR_HEADER: text[:_MAX_ERROR_HEADER_CHARS],
                # Two consumers of one stream may both give up on the same message: keep both letters.
                MSG_ID_HEADER: f"dlq.{ctx.stream}.{ctx.consumer}.{ctx.stream_sequence}",
            }
        )
        subject = dead_letter_subject(ctx.subject, prefix=self._dead_letter_prefix)
        try:
            ack = await self._js.publish(subject, msg.data, timeout=self._dead_letter_timeout, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            logger.error(
                "dead-lettering failed; the message will be retried",
                extra={**extra, "dead_letter_subject": subject, "error": repr(exc)},
            )
            return False
        logger.warning(
            "message dead-lettered",
            extra={**extra, "dead_letter_subject": subject, "dead_letter_seq": ack.seq, "error_code": code},
        )
        return True

    async def _settle(self, action: Awaitable[None], name: str, extra: Mapping[str, Any]) -> None:
        try:
            await action
        except nats.errors.Error as exc:
            # Without the nak/term the server redelivers after ack_wait, which is the safe outcome.
            logger.warning("could not settle the message", extra={**extra, "action": name, "error": repr(exc)})

    async def _release(self, messages: list[Msg]) -> None:
        for msg in messages:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()


async def run_consumer(
    js: JetStreamContext,
    stream: str,
    spec: ConsumerSpec,
    handler: Handler,
    *,
    stop: asyncio.Event,
    batch: int = 1,
    fetch_timeout: float = 2.0,
    dead_letter_prefix: str = DEAD_LETTER_PREFIX,
    metrics: ServiceMetrics | None = None,
) -> None:
    """Builds a :class:`Consumer` and runs it until ``stop`` is set. Handlers must be idempotent."""
    consumer = Consumer(
        js,
        stream,
        spec,
        handler,
        batch=batch,
        fetch_timeout=fetch_timeout,
        dead_letter_prefix=dead_letter_prefix,
        metrics=metrics,
    )
    await consumer.run(stop)


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _unsubscribe(subscription: JetStreamContext.PullSubscription) -> None:
    with contextlib.suppress(nats.errors.Error, ValueError):
        await subscription.unsubscribe()
