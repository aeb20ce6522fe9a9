"""Fault 7: a network partition of one NATS node in the middle of 600 creates, then healed.

The node runs in a network namespace of its own, joined to this host by one veth pair on a private /30
(10.213.X.0/30: the link exists only between this host and the test's namespace, and is deleted with it);
the two other nodes listen on the host's end of that link. The node is the models stream's leader, and
the registry's clients are on the majority side. In the middle of the load the link is unplugged: the node
keeps running, but its routes and every connection to it stall, as behind a real partition, until the link
is plugged back in.

The majority elects a new leader and keeps acknowledging every create. Meanwhile the cut-off node still
answers a client on its own side of the cut, but does not acknowledge that client's publish to the stream
(it has no quorum), and that message is not in the stream afterwards. Once the link is back the node
rejoins its routes and catches up: its own copy of the stream ends with the same last sequence as the
others'. Needs root and ``ip netns``: without them the test fails, it does not skip.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from cluster_kit import (
    Accounting,
    NamespaceLink,
    created_models,
    models_stream_state,
    namespace_link,
    registry_replicas,
)

from modelhub_common.events import MODELS
from modelhub_devstack.nats import NatsCluster, NatsClusterNode
from modelhub_devstack.processes import process_state
from modelhub_registry.settings import RegistrySettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

CREATES = 600
CONCURRENCY = 8
# A subject of the models stream that nothing else publishes to: the cut-off side's publish.
PROBE_SUBJECT = MODELS.subject("partition_probed")

# Run inside the namespace, on the cut-off side: is the node there serving, and does it acknowledge a
# publish to the stream? Prints one JSON line.
_CUT_OFF_SIDE_PROBE = """
import asyncio, json, sys
import httpx, nats

async def main(monitor_url, url, subject):
    varz = httpx.get(monitor_url + "/varz", timeout=5).status_code
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        await nc.jetstream().publish(subject, b"published on the cut-off side", timeout=5)
        published = "acknowledged"
    except Exception as exc:
        published = type(exc).__name__
    finally:
        await nc.close()
    print(json.dumps({"varz": varz, "publish": published}))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def link() -> Iterator[NamespaceLink]:
    with namespace_link() as made:
        yield made


@pytest.fixture
def cluster(tmp_path: Path, link: NamespaceLink) -> Iterator[NatsCluster]:
    """The suite's three nodes, the last one (n3) in the link's namespace, the others on the host's end."""
    hosts = [link.host_address, link.host_address, link.namespace_address]
    started = NatsCluster(tmp_path / "nats", hosts=hosts, launchers=[(), (), link.launcher])
    try:
        started.start()
        yield started
    finally:
        started.stop()  # before the link's namespace goes


def _own_last_seq(node: NatsClusterNode) -> int | None:
    """The last sequence of the node's own copy of the models stream, from its monitoring endpoint."""
    report = httpx.get(f"{node.monitor_url}/jsz", params={"accounts": "true", "streams": "true"}, timeout=5).json()
    for account in report.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == MODELS.stream:
                return int(stream["state"]["last_seq"])
    return None


async def _lead_from(urls: list[str], name: str) -> None:
    """Steps the models stream's leader down, preferring ``name``, until ``name`` leads it."""
    deadline = time.monotonic() + 60
    while (await models_stream_state(urls))[0] != name:
        assert time.monotonic() < deadline, f"{name} did not become the models stream's leader"
        nc = await nats.connect(urls)
        try:
            request = {"placement": {"preferred": name}}
            subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{MODELS.stream}"
            await nc.request(subject, json.dumps(request).encode(), timeout=5)
        except (nats.errors.Error, TimeoutError):
            pass  # asked again on the next round
        finally:
            await nc.close()
        await asyncio.sleep(1)


async def _reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _probe_cut_off_side(link: NamespaceLink, node: NatsClusterNode) -> dict[str, Any]:
    argv = [*link.launcher, sys.executable, "-c", _CUT_OFF_SIDE_PROBE, node.monitor_url, node.url, PROBE_SUBJECT]
    probe = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(probe.communicate(), timeout=60)
    assert probe.returncode == 0, err.decode(errors="replace")
    return dict(json.loads(out))


async def _probe_subject_is_empty(urls: list[str]) -> bool:
    nc = await nats.connect(urls)
    try:
        await nc.jetstream().get_last_msg(MODELS.stream, PROBE_SUBJECT)
    except nats.js.errors.NotFoundError:
        return True
    finally:
        await nc.close()
    return False


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


def test_a_node_partitioned_mid_load_leaves_the_majority_working_and_catches_up_when_healed(
    cluster: NatsCluster,
    link: NamespaceLink,
    service_settings: Callable[..., Any],
    make_token: Callable[..., str],
    tmp_path: Path,
) -> None:
    # The stream exists (R3) and is led by the namespaced node before the registry's clients are pointed at
    # the majority side.
    settings: RegistrySettings = service_settings(
        RegistrySettings, nats_url=cluster.url, stream_replicas=3, connection_sync_seconds=0, log_level="WARNING"
    )
    headers = {"Authorization": f"Bearer {make_token()}"}
    replicas = registry_replicas(settings, tmp_path)
    cut_off = cluster.node_named("n3")
    try:
        replicas.start()
        replicas.stop_all()
        asyncio.run(_lead_from(cluster.urls, cut_off.name))
        leader, _, replicated = asyncio.run(models_stream_state(cluster.urls))
        assert (leader, replicated) == (cut_off.name, 3)
        majority = [n.url for n in cluster.nodes if n is not cut_off]
        replicas.env = {**replicas.env, "MODELHUB_REGISTRY_NATS_URL": ",".join(majority)}
        url = replicas.start().url
        assert httpx.post(f"{url}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers).status_code == 201
        pid = cut_off.recorded_pid()
        assert pid is not None
        prefix = f"part-{uuid.uuid4().hex[:6]}"
        steps: list[str] = []
        during: dict[str, Any] = {}
        cut_at = 0.0

        async def cut_then_heal(done: int) -> None:
            nonlocal cut_at
            if done == CREATES // 3 and not steps:
                link.cut()
                steps.append("cut")
                cut_at = time.monotonic()
            elif done == 2 * CREATES // 3 and steps == ["cut"]:
                during["leader"] = (await models_stream_state(majority))[0]
                during["reachable from the host"] = await _reachable(link.namespace_address, cut_off.port)
                during["process state"] = process_state(pid)
                during["cut-off side"] = await _probe_cut_off_side(link, cut_off)
                link.restore()
                steps.append("healed")
                during["seconds cut off"] = round(time.monotonic() - cut_at, 1)

        try:
            acknowledged = asyncio.run(_creates(url, headers, prefix, cut_then_heal))
        finally:
            if steps == ["cut"]:
                link.restore()  # never leave the link down for the teardown
        assert steps == ["cut", "healed"]
        print(f"during the cut: {during}")  # noqa: T201 - what the test saw
        assert during["leader"] != leader  # the majority elected a leader of its own meanwhile
        assert not during["reachable from the host"]
        assert during["process state"] not in {"T", "t", "Z", None}  # running, not frozen or gone
        # On its own side the node still serves a client, but cannot acknowledge its publish: no quorum.
        assert during["cut-off side"]["varz"] == 200
        assert during["cut-off side"]["publish"] != "acknowledged"

        # Every acknowledged create's event in the stream first (the relay publishes after the 201s) ...
        stored, delivered = created_models(settings.database_url.get_secret_value(), cluster.urls, prefix)

        # ... then the node: it routes to both peers again and its own copy of the stream catches up with the
        # others' (each node's copy read from its own monitoring endpoint: just after the link is back the node
        # may still answer as the leader it was, with its stale state).
        deadline = time.monotonic() + 60
        while True:
            copies = {node.name: _own_last_seq(node) for node in cluster.nodes}
            routes = httpx.get(f"{cut_off.monitor_url}/routez", timeout=5).json()["num_routes"]
            if routes >= 2 and len(set(copies.values())) == 1:
                break
            assert time.monotonic() < deadline, (routes, copies)
            time.sleep(0.5)
        assert (copies[cut_off.name] or 0) >= len(stored)  # what was published while it was cut off included
        assert asyncio.run(_probe_subject_is_empty(cluster.urls))  # the cut-off side's publish never landed

        shown = f"partitioned node {leader}: its copy of the stream ends at {copies[cut_off.name]}, the others {copies}"
        print(shown)  # noqa: T201 - what the test saw
        name = "partition one NATS node off (network namespace, link cut) and heal it"
        Accounting(name, CREATES, acknowledged, stored, delivered).report()
    finally:
        replicas.stop_all()
