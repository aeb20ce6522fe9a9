"""Model-file events tell the rag service which models use which collections."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import nats

from modelhub.events.v1 import events_pb2
from modelhub_common import jetstream
from modelhub_common.events import MODELS, new_envelope


async def _publish(nats_url: str, event: str, payload: Any) -> None:
    nc = await nats.connect(nats_url)
    try:
        envelope = new_envelope(MODELS.subject(event), actor="root", role="admin", source="registry", payload=payload)
        await jetstream.publish(nc.jetstream(), MODELS.subject(event), envelope)
    finally:
        await nc.close()


def _eventually(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_models_using_a_collection_are_recorded_and_unknown_ids_reported(make_rag: Any, nats_url: str) -> None:
    rag = make_rag(consume_model_events=True)
    kb = rag.create()
    model = f"support-bot-{uuid.uuid4().hex[:8]}"
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    changed = events_pb2.ModelChanged(model_id=model, version=2, knowledge_ids=[kb["id"], ghost])
    asyncio.run(_publish(nats_url, "updated", changed))

    def used_by() -> list[str]:
        body = rag.client.get(f"/api/v1/knowledge/{kb['id']}", headers=rag.admin).json()
        return list(body["used_by_models"])

    assert _eventually(used_by) == [model]
    dangling = rag.client.get("/api/v1/model-references/dangling", headers=rag.admin).json()["items"]
    assert {"model_id": model, "knowledge_id": ghost} in dangling
    assert rag.client.get("/api/v1/model-references/dangling", headers=rag.as_user("bob")).status_code == 403

    # An older event arriving late does not undo the newer one.
    asyncio.run(_publish(nats_url, "updated", events_pb2.ModelChanged(model_id=model, version=1, knowledge_ids=[])))
    asyncio.run(_publish(nats_url, "updated", events_pb2.ModelChanged(model_id=f"{model}-marker", version=1)))
    _eventually(lambda: rag.sql("SELECT 1 FROM model_versions WHERE model_id = %s", f"{model}-marker"))
    assert used_by() == [model]

    # Deleting the collection reports the models that still use it.
    deleted = rag.client.delete(f"/api/v1/knowledge/{kb['id']}", headers=rag.admin).json()
    assert deleted["used_by_models"] == [model]

    asyncio.run(_publish(nats_url, "deleted", events_pb2.ModelDeleted(model_id=model, last_version=3)))
    _eventually(lambda: rag.sql("SELECT deleted FROM model_versions WHERE model_id = %s", model) == [(True,)])
    assert rag.sql("SELECT count(*) FROM model_references WHERE model_id = %s", model) == [(0,)]
