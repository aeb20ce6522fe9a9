"""The four services scraped by a real Prometheus: traffic shows up as the expected series, and 1,000 distinct
model ids leave the number of HTTP series small."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.ports import pick_free_port
from modelhub_devstack.prometheus import PrometheusServer

MODELS = 1000
WAIT = 60.0


def _address(url: str) -> str:
    return urlsplit(url).netloc


def _value(result: list[dict[str, Any]]) -> float:
    return sum(float(sample["value"][1]) for sample in result)


def _wait_at_least(prometheus: PrometheusServer, promql: str, minimum: float) -> float:
    """Polls until ``promql`` sums to at least ``minimum`` (Prometheus scrapes every second)."""
    deadline = time.monotonic() + WAIT
    while True:
        value = _value(prometheus.query(promql))
        if value >= minimum or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


@pytest.fixture
def puller_and_gateway(
    service_settings: Callable[..., Any], registry_service: str, rag_service: str
) -> Iterator[tuple[str, str, int]]:
    """The puller and the gateway (sharing this test's database: only the puller has an outbox)."""
    from modelhub_chat_gateway import bootstrap as gateway_bootstrap
    from modelhub_chat_gateway.settings import ChatGatewaySettings
    from modelhub_puller import bootstrap as puller_bootstrap
    from modelhub_puller.settings import PullerSettings

    puller_settings = service_settings(PullerSettings, port=pick_free_port())
    asyncio.run(puller_bootstrap.run_migrations(puller_settings))
    gateway_settings = service_settings(
        ChatGatewaySettings, port=pick_free_port(), grpc_port=0, registry_url=registry_service, rag_url=rag_service
    )
    asyncio.run(gateway_bootstrap.run_migrations(gateway_settings))
    gateway_app = gateway_bootstrap.build_app(gateway_settings)
    with (
        serve_in_thread(puller_bootstrap.build_app(puller_settings), name="puller", port=puller_settings.port) as p,
        serve_in_thread(gateway_app, name="gateway", port=gateway_settings.port) as g,
    ):
        yield p, g, gateway_app.state.grpc_port


async def _list_models(grpc_port: int, token: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        await stub.ListModels(chat_pb2.ListModelsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=30)


def test_prometheus_scrapes_every_service_and_sees_the_traffic(
    prometheus_server: PrometheusServer,
    registry_service: str,
    rag_service: str,
    puller_and_gateway: tuple[str, str, int],
    make_token: Callable[..., str],
) -> None:
    puller, gateway, grpc_port = puller_and_gateway
    prometheus_server.set_targets(
        {
            "registry": _address(registry_service),
            "rag": _address(rag_service),
            "puller": _address(puller),
            "chat-gateway": _address(gateway),
        }
    )
    admin = {"Authorization": f"Bearer {make_token()}"}
    run = uuid.uuid4().hex[:6]

    with httpx.Client(base_url=registry_service, headers=admin, timeout=30) as registry:
        assert registry.post("/api/v1/base-models", json={"id": "llama3.1:8b"}).status_code == 201
        for n in range(MODELS):
            created = registry.post(
                "/api/v1/models", json={"id": f"m-{run}-{n}", "name": f"M {n}", "base_model_id": "llama3.1:8b"}
            )
            assert created.status_code == 201, created.text
            assert registry.get(f"/api/v1/models/m-{run}-{n}").status_code == 200
        for n in range(50):  # unknown paths, each distinct
            assert registry.get(f"/no/such/path/{run}-{n}").status_code == 404

    with httpx.Client(base_url=rag_service, headers=admin, timeout=60) as rag:
        kb = rag.post("/api/v1/knowledge", json={"name": f"kb-{run}"})
        assert kb.status_code == 201, kb.text
        kid = kb.json()["id"]
        text = b"Prometheus scrapes metrics. The registry stores model files. Grafana draws dashboards.\n" * 20
        upload = rag.post(f"/api/v1/knowledge/{kid}/files", files={"file": ("notes.txt", text, "text/plain")})
        assert upload.status_code == 202, upload.text
        deadline = time.monotonic() + WAIT
        while rag.get(f"/api/v1/knowledge/{kid}/files").json()["items"][0]["status"] not in ("indexed", "failed"):
            assert time.monotonic() < deadline, "the file was never indexed"
            time.sleep(0.2)
        query = rag.post(f"/api/v1/knowledge/{kid}/query", json={"query": "what draws dashboards?"})
        assert query.status_code == 200, query.text

    asyncio.run(_list_models(grpc_port, make_token(subject="alice", role="user")))

    # Every target is up.
    up = prometheus_server.wait_for('up{job="modelhub"} == 1')
    deadline = time.monotonic() + WAIT
    while len(up) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        up = prometheus_server.query('up{job="modelhub"} == 1')
    assert sorted(s["metric"]["service_instance"] for s in up) == ["chat-gateway", "puller", "rag", "registry"]

    # HTTP: the reads counted under the route template, 1,000 ids in one series.
    reads = 'modelhub_http_requests_total{service="registry",method="GET",route="/api/v1/models/{model_id:path}"}'
    # (The gateway's catalog reads each new model too, so there are more reads than the test made.)
    assert _wait_at_least(prometheus_server, reads, MODELS) >= MODELS
    assert len(prometheus_server.query(reads)) <= 2  # 2xx, and 4xx if a read raced a create
    unmatched = 'modelhub_http_requests_total{service="registry",route="unmatched",status="4xx"}'
    assert _wait_at_least(prometheus_server, unmatched, 50) == 50
    # Cardinality: a handful of routes x methods x status classes, whatever the ids.
    counters = prometheus_server.query('count(modelhub_http_requests_total{service="registry"})')
    assert 3 <= _value(counters) <= 12, counters
    every_http_series = _value(prometheus_server.query('count({__name__=~"modelhub_http_.*",service="registry"})'))
    assert every_http_series < 200, every_http_series
    assert prometheus_server.query(f'{{__name__=~"modelhub_.*", route=~".*{run}.*"}}') == []

    # Events: every create's outbox row published, the backlog gauge read at scrape time, relay timings.
    published = 'modelhub_outbox_published_rows_total{service="registry",outcome="published"}'
    assert _wait_at_least(prometheus_server, published, MODELS) >= MODELS
    assert prometheus_server.wait_for('modelhub_outbox_pending_rows{service="registry"}')
    assert prometheus_server.wait_for('modelhub_outbox_oldest_pending_age_seconds{service="registry"}')
    assert _value(prometheus_server.query('modelhub_outbox_publish_duration_seconds_count{service="registry"}')) > 0
    ingest_acked = 'modelhub_consumer_acked_messages_total{service="rag",consumer="rag-ingest"}'
    assert _wait_at_least(prometheus_server, ingest_acked, 1) >= 1
    assert prometheus_server.wait_for('modelhub_consumer_pending_messages{service="rag",consumer="rag-ingest"}')
    assert prometheus_server.wait_for('modelhub_consumer_delivered_messages_total{service="registry"}') is not None

    # RAG: files by status, chunks embedded, retrieval steps.
    assert _wait_at_least(prometheus_server, 'modelhub_rag_files{status="indexed"}', 1) == 1
    assert _value(prometheus_server.query("modelhub_rag_chunks_embedded_total")) >= 1
    steps = prometheus_server.wait_for("modelhub_rag_retrieval_step_duration_seconds_count")
    assert {"total", "embed", "text", "vector"} <= {s["metric"]["step"] for s in steps}

    # Database pools of every service with one, the gateway's gRPC calls, the puller's instruments.
    pools = prometheus_server.wait_for("modelhub_db_pool_connections")
    assert {(s["metric"]["service"], s["metric"]["pool"]) for s in pools} >= {
        ("registry", "main"),
        ("rag", "main"),
        ("rag", "search"),
        ("puller", "main"),
        ("chat-gateway", "main"),
    }
    list_models = 'modelhub_grpc_server_calls_total{method="ListModels",code="OK"}'
    assert _wait_at_least(prometheus_server, list_models, 1) == 1
    assert prometheus_server.wait_for('modelhub_puller_pulls_total{outcome="completed"}')
    assert prometheus_server.wait_for("modelhub_puller_active_pulls")
