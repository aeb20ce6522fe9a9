"""The work queue: ``modelhub.pulls.v1.requested`` handed to the replicas through one durable consumer.

``MODELHUB_PULLS`` is a limits stream (other services read its outcome events), so the queue is a durable
pull consumer on it, ``puller-work``, filtered to ``requested``: every replica binds the same durable, each
message goes to one of them, an ack removes it from the consumer's pending set, and a replica that dies
without acking has its message redelivered after ``ack_wait`` (the running pull's heartbeat keeps
extending that deadline while it is alive).
"""

from __future__ import annotations

from modelhub_common.consumer import Handler, MsgContext
from modelhub_common.errors import PermanentError
from modelhub_common.events import PULLS, EventEnvelope
from modelhub_common.jetstream import ConsumerSpec
from modelhub_puller.service_layer.worker import PullWorker

WORK_DURABLE = "puller-work"


def work_consumer_spec(*, ack_wait: float, max_deliver: int) -> ConsumerSpec:
    return ConsumerSpec(
        durable=WORK_DURABLE,
        filter_subjects=(PULLS.subject("requested"),),
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        backoff=(1.0, 5.0, 15.0, 60.0),
        max_ack_pending=1000,
        description="pull requests, shared by every puller replica",
    )


def pull_requested_handler(worker: PullWorker) -> Handler:
    async def handle(envelope: EventEnvelope, context: MsgContext) -> None:
        if envelope.WhichOneof("payload") != "pull_requested":
            raise PermanentError(f"expected a pull_requested payload, got {envelope.WhichOneof('payload')}")
        pull_id = envelope.pull_requested.pull_id
        if not pull_id:
            raise PermanentError("pull_requested has no pull id")
        await worker.handle(pull_id, context)

    return handle
