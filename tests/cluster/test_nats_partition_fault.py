"""Fault 7, as near as this machine allows: one NATS node cut off from the cluster in the middle of 600 creates,
then let back. There is no packet filter here (no iptables), so the node is frozen with SIGSTOP: it stops
answering its routes and its clients alike, as a node behind a partition does, while its TCP connections stay
open. The frozen node is the models stream's leader; the registry's clients are on the majority side.

The majority elects a new leader and keeps acknowledging; once the node is let go (SIGCONT) it rejoins its
routes and catches up: its own copy of the stream ends with the same last sequence as the leader's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_kit import Accounting, created_models, models_stream_state, registry_replicas

from modelhub_common.events import MODELS
from modelhub_devstack.nats import NatsCluster, NatsClusterNode
from modelhub_registry.settings import RegistrySettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

CREATES = 600
CONCURRENCY = 8


def _own_last_seq(node: NatsClusterNode) -> int | None:
    """The last sequence of the node's own copy of the models stream, from its monitoring endpoint."""
    report = httpx.get(f"{node.monitor_url}/jsz", params={"accounts": "true", "streams": "true"}, timeout=5).json()
    for account in report.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == MODELS.stream:
                return int(stream["state"]["last_seq"])
    return None


async def _creates(url: str, headers: dict[str, str], prefix: str, on_progress: Callable[[int], Any]) -> set[str]:
    acknowledged: set[str] = set()
    ids = iter(range(CREATES))
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def client() -> None:
            nonlocal done
            for i in ids:
                model_id = f"{prefix}-{i:04d}"
                body = {"id": model_id, "name": model_id, "base_model_id": "llama3.1:8b"}
                response = await http.post("/api/v1/models", json=body, headers=headers)
                if response.status_code == 201:
                    acknowledged.add(model_id)
                done += 1
                await on_progress(done)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return acknowledged


def test_a_node_cut_off_mid_load_leaves_the_majority_working_and_catches_up_when_back(
    cluster: NatsCluster, service_settings: Callable[..., Any], make_token: Callable[..., str], tmp_path: Path
) -> None:
    # The stream exists (R3) before the registry's clients are pointed at the majority side.
    settings: RegistrySettings = service_settings(
        RegistrySettings, nats_url=cluster.url, stream_replicas=3, connection_sync_seconds=0, log_level="WARNING"
    )
    headers = {"Authorization": f"Bearer {make_token()}"}
    replicas = registry_replicas(settings, tmp_path)
    try:
        replicas.start()
        replicas.stop_all()
        leader, _, replicated = asyncio.run(models_stream_state(cluster.urls))
        assert replicated == 3
        frozen = cluster.node_named(leader)
        majority = [n.url for n in cluster.nodes if n is not frozen]
        replicas.env = {**replicas.env, "MODELHUB_REGISTRY_NATS_URL": ",".join(majority)}
        url = replicas.start().url
        assert httpx.post(f"{url}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers).status_code == 201
        pid = frozen.recorded_pid()
        assert pid is not None
        prefix = f"part-{uuid.uuid4().hex[:6]}"
        steps: list[str] = []
        during: list[str] = []

        async def cut_off_then_let_back(done: int) -> None:
            if done == CREATES // 3 and not steps:
                os.kill(pid, signal.SIGSTOP)
                steps.append("cut off")
            elif done == 2 * CREATES // 3 and steps == ["cut off"]:
                during.append((await models_stream_state(majority))[0])
                os.kill(pid, signal.SIGCONT)
                steps.append("back")

        try:
            acknowledged = asyncio.run(_creates(url, headers, prefix, cut_off_then_let_back))
        finally:
            os.kill(pid, signal.SIGCONT)  # never leave a stopped process behind
        assert steps == ["cut off", "back"]
        assert during and during[0] != leader  # the majority elected a leader of its own meanwhile

        # Every acknowledged create's event in the stream first (the relay publishes after the 201s) ...
        stored, delivered = created_models(settings.database_url.get_secret_value(), cluster.urls, prefix)

        # ... then the node: it routes to both peers again and its own copy of the stream catches up with the others'
        # (each node's copy read from its own monitoring endpoint: just after SIGCONT the node may still answer
        # API requests as the leader it was, with its stale state).
        deadline = time.monotonic() + 60
        while True:
            copies = {node.name: _own_last_seq(node) for node in cluster.nodes}
            routes = httpx.get(f"{frozen.monitor_url}/routez", timeout=5).json()["num_routes"]
            if routes >= 2 and len(set(copies.values())) == 1:
                break
            assert time.monotonic() < deadline, (routes, copies)
            time.sleep(0.5)
        assert (copies[frozen.name] or 0) >= len(stored)  # what was published while it was frozen included

        shown = f"cut-off node {leader}: its copy of the stream ends at {copies[frozen.name]}, as the others' {copies}"
        print(shown)  # noqa: T201 - what the test saw
        name = "cut one NATS node off (SIGSTOP) and let it back"
        Accounting(name, CREATES, acknowledged, stored, delivered).report()
    finally:
        replicas.stop_all()
