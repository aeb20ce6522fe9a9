"""What a NATS cluster and a second replica cost and buy: one run, side by side.

    .venv/bin/python bench/cluster.py [--creates N] [--rounds R] [--concurrency C] [--list-seconds S] [--keep]

One run starts real PostgreSQL and SeaweedFS S3, one NATS server and a three-node NATS JetStream cluster
(loopback routes), all on free loopback ports, and three registry processes (`python -m modelhub_registry
serve`, one worker process each):

* **one node**: registry A on its own database, its streams on the single NATS server (R1);
* **cluster R3**: registry B on another database, its streams replicated on the three nodes (R3);
* **A2**: a second replica of A (same database, same NATS), for the list figures.

Creates: model files are created through A and through B in alternating rounds (so drift on a shared machine
hits both alike) by ``C`` concurrent clients; creates/s is counted per round, and create→event is the time
from sending a create to receiving its ``modelhub.models.v1.created`` event (relayed from the outbox and
published to the stream, read by a core NATS subscriber on the same server or cluster).

List: ``GET /api/v1/models?limit=50`` by ``C`` concurrent clients for ``S`` seconds against A alone, then
against A and A2 (requests spread over both), alternating twice; requests/s of each.

Gateway: two chat-gateway processes (one database, registry A resolving the models) stream from bench/gateway.py's
streaming backend, a stand-in for a remote Ollama server (its own process; ``--tokens`` tokens
``--interval-ms`` apart), because the real local llama.cpp model cannot stream 64 answers at once on 2 cores.
``--streams`` concurrent clients each run one chat turn after another for ``--gateway-seconds`` seconds over 8
gRPC channels, against one replica, then with the channels spread round-robin over both (as a Kubernetes
Service spreads connections), alternating twice; answers/s, time to first token p50/p99 and the CPU each
process used.

Progress goes to stderr, the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import time
from typing import Any

import grpc
import httpx
import nats
import uvloop
from _support import (
    BenchStack,
    CpuMeter,
    ServiceProcess,
    machine_summary,
    markdown_table,
    percentile,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
    start_replicas,
)
from gateway import FAST, BackendProcess, Stream, gateway_stream
from rich.console import Console

from modelhub.chat.v1 import chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_common.events import MODELS, decode_envelope
from modelhub_devstack.nats import NatsCluster
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import RegistrySettings

ENV_PREFIX = "MODELHUB_REGISTRY_"
STDERR = Console(stderr=True)
BASE_MODEL = "llama3.1:8b"


async def create_round(
    url: str, nats_urls: list[str], headers: dict[str, str], prefix: str, creates: int, concurrency: int
) -> tuple[float, list[float]]:
    """``creates`` model files through ``url``; (creates per second, create→event latencies in seconds)."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    all_seen = asyncio.Event()
    nc = await nats.connect(nats_urls)

    async def on_event(msg: Any) -> None:
        model_id = decode_envelope(msg.data).model_changed.model_id
        began = sent.pop(model_id, None)
        if began is not None:
            latencies.append(time.perf_counter() - began)
            if len(latencies) == creates:
                all_seen.set()

    await nc.subscribe(MODELS.subject("created"), cb=on_event)
    await nc.flush()
    ids = iter(range(creates))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:

            async def client() -> None:
                for n in ids:
                    model_id = f"{prefix}-{n:05d}"
                    sent[model_id] = time.perf_counter()
                    body = {"id": model_id, "name": model_id, "base_model_id": BASE_MODEL}
                    response = await http.post("/api/v1/models", json=body, headers=headers)
                    if response.status_code != 201:
                        raise RuntimeError(f"create answered {response.status_code}: {response.text[:200]}")

            began = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
        await asyncio.wait_for(all_seen.wait(), timeout=120)
    finally:
        await nc.close()
    return creates / elapsed, latencies


async def list_load(urls: list[str], headers: dict[str, str], seconds: float, concurrency: int) -> float:
    """Requests per second of ``GET /api/v1/models?limit=50`` spread over ``urls``."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
    spread = itertools.cycle(clients)
    done = 0
    deadline = time.perf_counter() + seconds
    try:

        async def client() -> None:
            nonlocal done
            http = next(spread)
            while time.perf_counter() < deadline:
                response = await http.get("/api/v1/models", params={"limit": 50}, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"list answered {response.status_code}: {response.text[:200]}")
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - began)
    finally:
        for http in clients:
            await http.aclose()


CHANNELS = 8


async def chat_load(
    targets: list[str], token: str, streams: int, seconds: float, stagger: float
) -> tuple[float, list[Stream]]:
    """``streams`` clients, each running chat turns one after another until ``seconds`` have passed, over
    ``CHANNELS`` gRPC channels spread round-robin over ``targets``; (answers per second, every turn)."""
    channels = [grpc.aio.insecure_channel(targets[n % len(targets)]) for n in range(CHANNELS)]
    stubs = [chat_pb2_grpc.ChatServiceStub(channel) for channel in channels]
    metadata = [("authorization", f"Bearer {token}")]
    try:
        # Warm up: every channel connected, the model resolved and cached by every replica.
        await asyncio.gather(*(gateway_stream(stub, metadata, [FAST]) for stub in stubs for _ in range(2)))
        began = time.perf_counter()
        deadline = began + seconds

        async def client(index: int) -> list[Stream]:
            # Starts spread over one answer's duration, so that turns do not all arrive in the same millisecond.
            await asyncio.sleep(stagger * index / streams)
            turns = []
            while time.perf_counter() < deadline:
                turns.append(await gateway_stream(stubs[index % CHANNELS], metadata, [FAST]))
            return turns

        results = await asyncio.gather(*(client(i) for i in range(streams)))
        elapsed = time.perf_counter() - began
    finally:
        for channel in channels:
            await channel.close()
    turns = [turn for turns in results for turn in turns]
    return sum(1 for t in turns if not t.error and t.ttft) / elapsed, turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=2000, help="model files per configuration (default 2000)")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds the creates are split into")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--list-seconds", type=float, default=8, help="seconds per list measurement (default 8)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent chat streams (default 64)")
    parser.add_argument("--gateway-seconds", type=float, default=10, help="seconds per gateway measurement")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per answer of the backend (default 32)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="gap between tokens (default 20 ms)")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    args = parser.parse_args()
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with contextlib.ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-bench-cl-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root))
        stack.start(log)
        cluster = NatsCluster(root / "nats-cluster")
        cleanup.callback(cluster.stop)
        began = time.perf_counter()
        cluster.start()
        log(f"NATS cluster of 3 ready in {time.perf_counter() - began:.2f} s")
        secret = secrets.token_urlsafe(48)
        configs = {
            "one node": (stack.database("registry_one"), stack.nats.url, 1),
            "cluster R3": (stack.database("registry_r3"), cluster.url, 3),
        }
        urls: dict[str, str] = {}
        registry_pids: dict[str, int] = {}
        for name, (db, nats_url, replicas) in configs.items():
            base: dict[str, object] = {
                **stack.service_values(db, secret),
                "nats_url": nats_url,
                "stream_replicas": replicas,
                "connection_sync_seconds": 0,
                "allow_private_urls": True,  # the gateway phase's streaming backend is on loopback
                "workers": 1,  # one process per replica: the figures compare replicas, not worker counts
            }
            asyncio.run(bootstrap.run_migrations(RegistrySettings(**{**base, "port": 0})))  # type: ignore[arg-type]
            for replica in ("", " (replica 2)") if name == "one node" else ("",):
                port = pick_free_port()
                process = ServiceProcess(
                    root / f"registry-{len(urls)}",
                    module="modelhub_registry",
                    env=service_env(ENV_PREFIX, {**base, "port": port}),
                    port=port,
                    name=f"{name}{replica}",
                )
                cleanup.callback(process.stop)
                process.start()
                urls[f"{name}{replica}"] = process.base_url
                registry_pids[f"{name}{replica}"] = process.recorded_pid() or 0
                log(f"registry ({name}{replica}) ready at {process.base_url}")
        token = issue_token(secret, subject="bench-admin", role="admin", ttl_seconds=3600)
        headers = {"Authorization": f"Bearer {token}"}
        for name in configs:
            httpx.post(f"{urls[name]}/api/v1/base-models", json={"id": BASE_MODEL}, headers=headers).raise_for_status()

        nats_urls = {"one node": [stack.nats.url], "cluster R3": cluster.urls}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        per_round = max(1, args.creates // args.rounds)
        for n in range(args.rounds):
            for name in configs if n % 2 == 0 else reversed(list(configs)):
                rate, seen = asyncio.run(
                    create_round(urls[name], nats_urls[name], headers, f"r{n}", per_round, args.concurrency)
                )
                rates[name].append(rate)
                latencies[name] += seen
            log(f"create round {n + 1}/{args.rounds} done")

        listing: dict[str, list[float]] = {"one replica": [], "two replicas": []}
        pair = [urls["one node"], urls["one node (replica 2)"]]
        for n in range(2):
            for name in ("one replica", "two replicas") if n % 2 == 0 else ("two replicas", "one replica"):
                targets = pair if name == "two replicas" else pair[:1]
                listing[name].append(asyncio.run(list_load(targets, headers, args.list_seconds, args.concurrency)))
            log(f"list round {n + 1}/2 done")

        backend = BackendProcess(root / "backend", pick_free_port(), args.tokens, args.interval_ms / 1000)
        cleanup.callback(backend.stop)
        backend.start()
        with httpx.Client(base_url=urls["one node"], headers=headers) as api:
            connection = api.post("/api/v1/connections", json={"type": "ollama", "url": backend.url}).json()
            api.post(f"/api/v1/connections/{connection['id']}/sync").raise_for_status()
        gateway_values: dict[str, object] = {
            **stack.service_values(stack.database("gateway"), secret),
            "database_pool_max": 20,
            "registry_url": urls["one node"],
            "rag_url": "http://127.0.0.1:9",  # no knowledge in these turns
            "first_token_timeout_seconds": 120,
        }
        asyncio.run(gateway_bootstrap.run_migrations(ChatGatewaySettings(**gateway_values)))  # type: ignore[arg-type]
        gateways = start_replicas(
            cleanup,
            root,
            module="modelhub_chat_gateway",
            prefix=GATEWAY_PREFIX,
            values=gateway_values,
            count=2,
            name="gateway",
            port_keys=("port", "grpc_port"),
        )
        grpc_targets = [f"127.0.0.1:{g.ports_by_key['grpc_port']}" for g in gateways]
        log(f"two gateway replicas ready (gRPC {', '.join(grpc_targets)}), backend at {backend.url}")
        user = issue_token(secret, subject="bench-user", role="user", ttl_seconds=3600)
        meter = CpuMeter(
            {
                **stack.processes(),
                "gateway 1": gateways[0].recorded_pid() or 0,
                "gateway 2": gateways[1].recorded_pid() or 0,
                "backend": backend.recorded_pid() or 0,
                "registry": registry_pids["one node"],
            }
        )
        answer_seconds = args.tokens * args.interval_ms / 1000
        chats: dict[str, list[tuple[float, list[Stream], dict[str, float]]]] = {"one replica": [], "two replicas": []}
        for n in range(2):
            for name in ("one replica", "two replicas") if n % 2 == 0 else ("two replicas", "one replica"):
                targets = grpc_targets if name == "two replicas" else grpc_targets[:1]
                before = meter.snapshot()
                rate, turns = uvloop.run(chat_load(targets, user, args.streams, args.gateway_seconds, answer_seconds))
                chats[name].append((rate, turns, CpuMeter.delta(before, meter.snapshot())))
            log(f"gateway round {n + 1}/2 done")

    one, r3 = "one node", "cluster R3"
    creates = {name: sum(values) / len(values) for name, values in rates.items()}
    p50 = {name: percentile(values, 50) * 1000 for name, values in latencies.items()}
    p99 = {name: percentile(values, 99) * 1000 for name, values in latencies.items()}
    print(f"\n{machine_summary()}\n")
    print(
        markdown_table(
            ["registry creates", "creates", "creates/s", "create→event p50 ms", "create→event p99 ms"],
            [
                *(
                    [name, f"{len(latencies[name]):,}", f"{creates[name]:.0f}", f"{p50[name]:.1f}", f"{p99[name]:.1f}"]
                    for name in (one, r3)
                ),
                [
                    "ratio cluster/one node",
                    "",
                    f"{creates[r3] / creates[one]:.2f}x",
                    f"{p50[r3] / p50[one]:.2f}x",
                    f"{p99[r3] / p99[one]:.2f}x",
                ],
            ],
        )
    )
    rps = {name: sum(values) / len(values) for name, values in listing.items()}
    print()
    print(
        markdown_table(
            ["registry GET /api/v1/models?limit=50", "requests/s"],
            [
                ["one replica", f"{rps['one replica']:.0f}"],
                ["two replicas (requests spread over both)", f"{rps['two replicas']:.0f}"],
                ["ratio two/one", f"{rps['two replicas'] / rps['one replica']:.2f}x"],
            ],
        )
    )
    print()
    print(gateway_table(chats, args))


def gateway_table(chats: dict[str, list[tuple[float, list[Stream], dict[str, float]]]], args: Any) -> str:
    rows, rate, p50, p99 = [], {}, {}, {}
    for name, rounds in chats.items():
        turns = [t for _, ts, _ in rounds for t in ts]
        ttfts = [t.ttft for t in turns if not t.error and t.ttft] or [0.0]
        rate[name] = sum(r for r, _, _ in rounds) / len(rounds)
        p50[name], p99[name] = percentile(ttfts, 50) * 1000, percentile(ttfts, 99) * 1000
        used = {key: sum(cpu[key] for _, _, cpu in rounds) for key in rounds[0][2]}
        busy = ", ".join(
            f"{key} {used[key] / used['wall'] * 100:.0f} %"
            for key in ("gateway 1", "gateway 2", "client", "backend", "registry", "postgres")
        )
        rows.append(
            [
                name,
                f"{len(turns):,} ({sum(1 for t in turns if t.error)})",
                f"{rate[name]:.1f}",
                f"{p50[name]:.1f}",
                f"{p99[name]:.1f}",
                f"{used['machine'] / used['wall'] * 100:.0f} % ({busy})",
            ]
        )
    one, two = "one replica", "two replicas"
    rows.append(
        [
            "ratio two/one",
            "",
            f"{rate[two] / rate[one]:.2f}x",
            f"{p50[two] / p50[one]:.2f}x",
            f"{p99[two] / p99[one]:.2f}x",
            "",
        ]
    )
    return markdown_table(
        [
            f"gateway, {args.streams} streams ({args.tokens} tokens {args.interval_ms:g} ms apart)",
            "turns (failed)",
            "answers/s",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "CPU busy, of one core (machine; per process)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
