"""NATS JetStream plumbing shared by every service: connect/drain, stream and consumer provisioning, publish.

Nothing here connects at import time. A service's ``bootstrap`` calls :func:`connect`, provisions what it
owns with :func:`ensure_stream` / :func:`ensure_consumer`, and publishes with :func:`publish`, which always
sets ``Nats-Msg-Id`` so JetStream drops re-published duplicates inside the stream's duplicate window.

NATS errors are translated here: connectivity problems become
:class:`~modelhub_common.errors.DependencyError`, a server rejecting a stream or consumer configuration
becomes :class:`~modelhub_common.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.manager import JetStreamManager

from modelhub_common import tracing
from modelhub_common.errors import ConfigurationError, DependencyError
from modelhub_common.events import DEAD_LETTER_PREFIX, KNOWLEDGE, MODELS, PULLS, EventEnvelope, StreamArea

__all__ = [
    "DEAD_LETTER_STREAM",
    "DEFAULT_DUPLICATE_WINDOW",
    "MSG_ID_HEADER",
    "ConsumerSpec",
    "PubAck",
    "Retention",
    "Storage",
    "StreamSpec",
    "connect",
    "dead_letter_stream_spec",
    "dead_letter_subject",
    "drain",
    "ensure_consumer",
    "ensure_stream",
    "publish",
    "service_stream_spec",
    "standard_stream_specs",
]

logger = logging.getLogger(__name__)

PubAck = api.PubAck

MSG_ID_HEADER = "Nats-Msg-Id"

DEAD_LETTER_STREAM = "MODELHUB_DLQ"

DEFAULT_DUPLICATE_WINDOW = 10 * 60.0
"""Seconds during which JetStream drops a message whose ``Nats-Msg-Id`` it has already stored.

The transactional outbox relies on it: a relay that crashes after publishing but before marking the row
sent re-publishes the row with the same id (the row id), and the stream discards the copy. Relays must
therefore retry unsent rows well within this window; a row older than the window would be stored twice.
"""

DEFAULT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_DEAD_LETTER_MAX_AGE = 30 * 24 * 3600.0

Storage = Literal["file", "memory"]
Retention = Literal["limits", "interest", "workqueue"]

# Metadata keys under this prefix are written by the server itself and are ignored when comparing configs.
_SERVER_METADATA_PREFIX = "_nats."
_BACKOFF_METADATA_KEY = "modelhub.backoff"
# JetStream error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058


# ---------------------------------------------------------------------------------------------------------
# Connection


async def connect(
    url: str | Sequence[str],
    *,
    name: str,
    connect_timeout: int = 2,
    initial_connect_deadline: float = 30.0,
    reconnect_time_wait: int = 2,
    max_reconnect_attempts: int = -1,
    ping_interval: int = 20,
    max_outstanding_pings: int = 3,
    drain_timeout: int = 10,
) -> Client:
    """Connects to NATS and logs every disconnect, reconnect, error and close.

    Once connected, the client reconnects forever by default (``max_reconnect_attempts=-1``): a NATS
    restart or a rolling upgrade must not take the service down, and readiness probes report
    ``nc.is_connected`` in the meantime. The *first* connection is bounded by ``initial_connect_deadline``
    so that a service started without a reachable NATS fails fast and visibly.

    Raises :class:`DependencyError` if no server could be reached in time.
    """
    log_extra = {"nats_client": name}

    async def on_error(exc: Exception) -> None:
        logger.warning("NATS client error", extra={**log_extra, "error": repr(exc)})

    async def on_disconnected() -> None:
        if nc.is_closed:
            return  # a deliberate close or drain, reported by on_closed
        logger.warning("disconnected from NATS", extra=log_extra)

    async def on_reconnected() -> None:
        logger.info("reconnected to NATS", extra={**log_extra, "server": _server_url(nc)})

    async def on_closed() -> None:
        logger.info("NATS connection closed", extra=log_extra)

    # A cluster is given as its nodes' URLs (a list, or one string, comma-separated): the client fails over.
    servers = [u.strip() for u in url.split(",") if u.strip()] if isinstance(url, str) else list(url)
    nc = Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers,
                name=name,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
                allow_reconnect=True,
                connect_timeout=connect_timeout,
                reconnect_time_wait=reconnect_time_wait,
                max_reconnect_attempts=max_reconnect_attempts,
                ping_interval=ping_interval,
                max_outstanding_pings=max_outstanding_pings,
                drain_timeout=drain_timeout,
            ),
            timeout=initial_connect_deadline,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await nc.close()
        raise DependencyError(f"cannot connect to NATS: {exc!r}") from exc
    logger.info("connected to NATS", extra={**log_extra, "server": _server_url(nc)})
    return nc


async def drain(nc: Client) -> None:
    """Drains subscriptions and pending publishes, then closes. Safe to call on a closed client.

    Call it last on shutdown, after the consumer loops have returned (they finish their in-flight message
    first). While reconnecting a drain is impossible, so the client is closed instead.
    """
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except nats.errors.ConnectionClosedError:
        return
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        logger.warning("NATS drain failed; closing instead", extra={"error": repr(exc)})
        # Closing a half-broken connection can itself fail (e.g. ConnectionResetError); shutdown goes on.
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.close()


def _server_url(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else ""


# ---------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """The configuration of a stream this code base owns.

    ``duplicate_window`` is explicit (10 minutes by default, see :data:`DEFAULT_DUPLICATE_WINDOW`) because
    publish de-duplication, and with it the outbox, depends on it. Use ``retention="workqueue"`` for a
    stream of jobs that each have exactly one consumer (a message is removed once acked). Storage and
    retention cannot be changed on an existing stream; :func:`ensure_stream` refuses with a
    :class:`ConfigurationError` (that needs a migration, not a deploy).
    """

    name: str
    subjects: tuple[str, ...]
    max_age: float = DEFAULT_MAX_AGE
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    storage: Storage = "file"
    replicas: int = 1
    retention: Retention = "limits"
    max_bytes: int = -1
    max_msgs: int = -1
    max_msg_size: int = -1
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError(f"stream {self.name} needs at least one subject")
        if self.duplicate_window <= 0:
            raise ValueError(f"stream {self.name}: duplicate_window must be positive")
        if self.max_age > 0 and self.duplicate_window > self.max_age:
            raise ValueError(f"stream {self.name}: duplicate_window cannot exceed max_age")
        if self.replicas < 1:
            raise ValueError(f"stream {self.name}: replicas must be at least 1")

    def to_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy(self.retention),
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            discard=api.DiscardPolicy.OLD,
            max_age=self.max_age,
            max_msg_size=self.max_msg_size,
            storage=api.StorageType(self.storage),
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window,
        )


@dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A durable pull consumer (``<service>-<purpose>``) with explicit acks, delivering the whole stream.

    ``ack_wait`` is how long one delivery may take before the server redelivers it (a crashed worker, or a
    handler that neither finishes nor calls ``MsgContext.in_progress``). ``max_deliver`` bounds the
    attempts; the consumer loop dead-letters a message that fails on its last one.

    ``backoff[i]`` is the delay before attempt ``i + 2`` after a handler failure (the last value repeats).
    It is applied by the consumer loop through ``nak(delay)``, *not* sent to the server as the consumer's
    ``backoff``: the server would then use ``backoff[0]`` as the ack deadline of the first delivery in
    place of ``ack_wait``. It is recorded in the consumer's metadata so ``nats consumer info`` shows it.
    """

    durable: str
    filter_subjects: tuple[str, ...] = ()
    ack_wait: float = 30.0
    max_deliver: int = 5
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    max_ack_pending: int = 1000
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.durable or any(c in self.durable for c in ". *>"):
            raise ValueError(f"invalid durable consumer name {self.durable!r}")
        if self.ack_wait <= 0:
            raise ValueError(f"consumer {self.durable}: ack_wait must be positive")
        if self.max_deliver < 1:
            raise ValueError(f"consumer {self.durable}: max_deliver must be at least 1 (never unlimited)")
        if any(delay < 0 for delay in self.backoff):
            raise ValueError(f"consumer {self.durable}: backoff delays cannot be negative")
        if self.max_ack_pending < 1:
            raise ValueError(f"consumer {self.durable}: max_ack_pending must be at least 1")

    def retry_delay(self, num_delivered: int) -> float:
        """Seconds to wait before redelivering a message that failed on delivery ``num_delivered``."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(max(num_delivered, 1), len(self.backoff)) - 1]

    def to_config(self) -> api.ConsumerConfig:
        filters = list(self.filter_subjects)
        metadata = dict(self.metadata)
        metadata[_BACKOFF_METADATA_KEY] = ",".join(f"{delay:g}" for delay in self.backoff)
        return api.ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description=self.description,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            replay_policy=api.ReplayPolicy.INSTANT,
            max_ack_pending=self.max_ack_pending,
            metadata=metadata,
        )


def service_stream_spec(
    area: StreamArea,
    *,
    replicas: int = 1,
    storage: Storage = "file",
    max_age: float = DEFAULT_MAX_AGE,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
) -> StreamSpec:
    """The stream of one owning service, e.g. ``service_stream_spec(events.MODELS)``."""
    return StreamSpec(
        name=area.stream,
        subjects=tuple(area.subjects),
        replicas=replicas,
        storage=storage,
        max_age=max_age,
        duplicate_window=duplicate_window,
        description=f"modelhub {area.area} events",
    )


def dead_letter_stream_spec(
    *, replicas: int = 1, storage: Storage = "file", max_age: float = DEFAULT_DEAD_LETTER_MAX_AGE
) -> StreamSpec:
    """``MODELHUB_DLQ``: messages the consumer loops gave up on, on ``modelhub.dlq.<original subject>``."""
    return StreamSpec(
        name=DEAD_LETTER_STREAM,
        subjects=(f"{DEAD_LETTER_PREFIX}.>",),
        replicas=replicas,
        storage=storage,
        max_age=max_age,
        description="modelhub dead letters",
    )


def standard_stream_specs(*, replicas: int = 1, storage: Storage = "file") -> list[StreamSpec]:
    """The MODELS, PULLS and KNOWLEDGE service streams and the dead-letter stream."""
    areas = (MODELS, PULLS, KNOWLEDGE)
    services = [service_stream_spec(area, replicas=replicas, storage=storage) for area in areas]
    return [*services, dead_letter_stream_spec(replicas=replicas, storage=storage)]


def dead_letter_subject(subject: str, *, prefix: str = DEAD_LETTER_PREFIX) -> str:
    return f"{prefix}.{subject}"


# ---------------------------------------------------------------------------------------------------------
# Provisioning


async def ensure_stream(js: JetStreamManager, spec: StreamSpec) -> api.StreamInfo:
    """Creates the stream, updates it if its configuration differs from ``spec``, or leaves it alone.

    Safe to call from every replica at start-up, concurrently: creating an identical stream is a no-op on
    the server, and if another replica created it with another configuration in between, this one
    re-reads it and updates it.
    """
    desired = spec.to_config()
    log_extra = {"stream": spec.name}
    try:
        current = await _stream_info(js, spec.name)
        if current is None:
            try:
                info = await js.add_stream(desired)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                current = await _stream_info(js, spec.name)
                if current is None:
                    raise
            else:
                if info.did_create is not False:
                    logger.info("created stream", extra=log_extra)
                return info

        differences = _stream_differences(current.config, desired)
        if not differences:
            return current
        immutable = _immutable_changes(current.config, desired)
        if immutable:
            raise ConfigurationError(
                f"stream {spec.name}: {', '.join(immutable)} cannot be changed on an existing stream "
                "(migrate it by hand)"
            )
        info = await js.update_stream(desired)
        logger.info("updated stream", extra={**log_extra, "changed": differences})
        return info
    except nats.errors.Error as exc:
        raise _translate(exc, f"stream {spec.name}") from exc
    except TimeoutError as exc:
        raise DependencyError(f"timed out provisioning stream {spec.name}") from exc


async def ensure_consumer(js: JetStreamManager, stream: str, spec: ConsumerSpec) -> api.ConsumerInfo:
    """Creates the durable consumer, updates it if its configuration differs, or leaves it alone.

    Idempotent and safe to call concurrently from several replicas (the server's create is a
    create-or-update, and an identical configuration is a no-op).
    """
    desired = spec.to_config()
    log_extra = {"stream": stream, "consumer": spec.durable}
    try:
        current = await _consumer_info(js, stream, spec.durable)
        if current is not None:
            differences = _consumer_differences(current.config, desired)
            if not differences:
                return current
        info = await js.add_consumer(stream, desired)
        if current is None:
            logger.info("created consumer", extra=log_extra)
        else:
            logger.info("updated consumer", extra={**log_extra, "changed": differences})
        return info
    except nats.errors.Error as exc:
        raise _translate(exc, f"consumer {stream}/{spec.durable}") from exc
    except TimeoutError as exc:
        raise DependencyError(f"timed out provisioning consumer {stream}/{spec.durable}") from exc


async def _stream_info(js: JetStreamManager, name: str) -> api.StreamInfo | None:
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None


async def _consumer_info(js: JetStreamManager, stream: str, durable: str) -> api.ConsumerInfo | None:
    try:
        info: api.ConsumerInfo = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return None
    return info


def _stream_differences(current: api.StreamConfig, desired: api.StreamConfig) -> list[str]:
    pairs: dict[str, tuple[object, object]] = {
        "subjects": (sorted(current.subjects or []), sorted(desired.subjects or [])),
        "description": (current.description or None, desired.description or None),
        "retention": (_enum_value(current.retention), _enum_value(desired.retention)),
        "storage": (_enum_value(current.storage), _enum_value(desired.storage)),
        "discard": (_enum_value(current.discard), _enum_value(desired.discard)),
        "num_replicas": (current.num_replicas, desired.num_replicas),
        "max_age": (current.max_age, desired.max_age),
        "duplicate_window": (current.duplicate_window, desired.duplicate_window),
        "max_msgs": (current.max_msgs, desired.max_msgs),
        "max_bytes": (current.max_bytes, desired.max_bytes),
        "max_msg_size": (current.max_msg_size, desired.max_msg_size),
    }
    return [name for name, (have, want) in pairs.items() if have != want]


def _immutable_changes(current: api.StreamConfig, desired: api.StreamConfig) -> list[str]:
    changes = []
    if _enum_value(current.storage) != _enum_value(desired.storage):
        changes.append("storage")
    retentions = {_enum_value(current.retention), _enum_value(desired.retention)}
    if len(retentions) > 1 and api.RetentionPolicy.WORK_QUEUE.value in retentions:
        changes.append("retention (to or from workqueue)")
    return changes


def _consumer_differences(current: api.ConsumerConfig, desired: api.ConsumerConfig) -> list[str]:
    pairs: dict[str, tuple[object, object]] = {
        "filter_subjects": (_filters(current), _filters(desired)),
        "description": (current.description or None, desired.description or None),
        "deliver_policy": (_enum_value(current.deliver_policy), _enum_value(desired.deliver_policy)),
        "ack_policy": (_enum_value(current.ack_policy), _enum_value(desired.ack_policy)),
        "ack_wait": (current.ack_wait, desired.ack_wait),
        "max_deliver": (current.max_deliver, desired.max_deliver),
        "backoff": (current.backoff or None, desired.backoff or None),
        "max_ack_pending": (current.max_ack_pending, desired.max_ack_pending),
        "metadata": (_own_metadata(current.metadata), _own_metadata(desired.metadata)),
    }
    return [name for name, (have, want) in pairs.items() if have != want]


def _filters(config: api.ConsumerConfig) -> list[str]:
    subjects = list(config.filter_subjects or [])
    if config.filter_subject:
        subjects.append(config.filter_subject)
    return sorted(set(subjects) - {">"})


def _own_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(_SERVER_METADATA_PREFIX)}


def _enum_value(value: object) -> object:
    # The client returns plain strings from the server but takes enums (str subclasses) from us.
    return value.value if isinstance(value, Enum) else value


def _translate(exc: nats.errors.Error, what: str) -> DependencyError | ConfigurationError:
    unavailable = isinstance(exc, nats.js.errors.ServiceUnavailableError)
    if unavailable or not isinstance(exc, nats.js.errors.APIError):
        return DependencyError(f"NATS unavailable while provisioning {what}: {exc}")
    return ConfigurationError(f"NATS rejected {what}: {exc.description or exc}")


# ---------------------------------------------------------------------------------------------------------
# Publishing


async def publish(
    js: JetStreamContext,
    subject: str,
    envelope: EventEnvelope,
    *,
    msg_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> PubAck:
    """Publishes one envelope and waits for the stream's ack.

    ``Nats-Msg-Id`` is always set, to ``msg_id`` or else the envelope id (the outbox passes its row id), so
    a retried publish inside the stream's duplicate window is stored once; the returned ack then has
    ``duplicate=True``. Raises :class:`DependencyError` if no stream acked in time.
    """
    message_id = msg_id if msg_id is not None else envelope.id
    if not message_id:
        raise ValueError("publish needs a msg_id or an envelope with an id")
    all_headers = {**(headers or {}), MSG_ID_HEADER: message_id}
    tracing.inject_headers(all_headers)
    try:
        ack = await js.publish(subject, envelope.SerializeToString(), timeout=timeout, headers=all_headers)
    except (nats.errors.Error, TimeoutError) as exc:
        raise DependencyError(f"publish to {subject} failed: {exc!r}") from exc
    if ack.duplicate:
        logger.debug(
            "publish was a duplicate",
            extra={"subject": subject, "msg_id": message_id, "stream": ack.stream, "seq": ack.seq},
        )
    return ack
