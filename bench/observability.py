"""What observability costs: registry GET latency with tracing on vs off, in one run, plus the metrics middleware.

    .venv/bin/python bench/observability.py [--models N] [--rounds R] [--requests K] [--keep]

One run starts real NATS, PostgreSQL and SeaweedFS S3 on free loopback ports, migrates one registry
database and runs three registry processes on it (`python -m modelhub_registry serve`):

* **off**: the default, metrics on (they always are: `/metrics` is part of every app), tracing off;
* **on**: the same with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a local OTLP/HTTP sink this script runs
  (answers 200 to every export), so every request is traced (FastAPI, psycopg) and exported in batches;
* **sampled**: tracing on with `OTEL_TRACES_SAMPLER=parentbased_traceidratio` keeping 10 % of the traces
  (a trace started upstream keeps its caller's decision), as a production deployment would run it.

It seeds model files through the "off" registry, then measures `GET /api/v1/models/{id}` on random ids in
alternating rounds against the three (so drift on a shared machine hits both alike) and prints p50/p99 and the
on/off ratio, with each registry process's own CPU seconds per GET over its rounds (from /proc: steadier than
latency on a shared machine, where what else runs on the two cores moves the latencies).

The chat gateway the same way: three gateway processes (off, on, sampled) on one database, resolving models
through the "off" registry, stream answers from the fast Ollama-compatible backend of `bench/gateway.py` (its
own process; it stands in for a remote model server and sends its first token at once). One turn at a time,
in alternating rounds, the client times `ChatService.Chat` to the first delta: the added time to first token
is a gateway's p50 minus the untraced one's.

In-process (no network, so the differences are the middlewares' own cost per request), a trivial route called
through ASGI: bare, with the metrics middleware, and with tracing's server span — modelhub's own
`ServerSpanMiddleware` and, for comparison, OpenTelemetry's ASGI instrumentation (`FastAPIInstrumentor`),
each with every request recorded and with none sampled, spans batched to an exporter that drops them.

Progress goes to stderr, the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
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
)
from fastapi import FastAPI
from gateway import FAST, BackendProcess, gateway_stream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from rich.console import Console

from modelhub.chat.v1 import chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_common.metrics import HttpMetricsMiddleware, ServiceMetrics
from modelhub_common.tracing import ServerSpanMiddleware
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import RegistrySettings

ENV_PREFIX = "MODELHUB_REGISTRY_"
VARIANTS = ("off", "on", "sampled")
STDERR = Console(stderr=True)


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and drops every export."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        self.server.exports += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        return None


#: The share of traces the "sampled" registry keeps.
SAMPLE_RATIO = 0.1


@contextlib.contextmanager
def otlp_sink() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.exports = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def measure_get(client: httpx.AsyncClient, ids: list[str], headers: dict[str, str], n: int) -> list[float]:
    rng = random.Random()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        response = await client.get(f"/api/v1/models/{rng.choice(ids)}", headers=headers)
        samples.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"GET answered {response.status_code}: {response.text[:200]}")
    return samples


async def run_http(
    urls: dict[str, str], pids: dict[str, int], token: str, models: int, rounds: int, requests: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latencies of each registry's GETs, and the CPU seconds its process spent on them."""
    headers = {"Authorization": f"Bearer {token}"}
    ids = [f"bench-obs-{n}" for n in range(models)]
    async with httpx.AsyncClient(base_url=urls["off"], timeout=60) as seed:
        await seed.post("/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers)
        for model_id in ids:
            body = {"id": model_id, "name": model_id, "base_model_id": "llama3.1:8b", "params": {"temperature": 0.2}}
            response = await seed.post("/api/v1/models", json=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"seeding failed: {response.status_code} {response.text[:200]}")
    samples: dict[str, list[float]] = {name: [] for name in urls}
    meter = CpuMeter(pids)
    cpu = dict.fromkeys(urls, 0.0)
    clients = {name: httpx.AsyncClient(base_url=url, timeout=60) for name, url in urls.items()}
    try:
        for client in clients.values():  # warm-up: connections, caches, the first traced export
            await measure_get(client, ids, headers, 50)
        for r in range(rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                before = meter.snapshot()
                samples[name] += await measure_get(clients[name], ids, headers, requests)
                cpu[name] += CpuMeter.delta(before, meter.snapshot())[name]
            STDERR.print(f"[dim]round {r + 1}/{rounds} done[/dim]")
    finally:
        for client in clients.values():
            await client.aclose()
    return samples, cpu


async def measure_ttft(
    target: dict[str, str], pids: dict[str, int], token: str, rounds: int, turns: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Client-side time to the first delta of one-model turns, one at a time, per gateway, in alternating rounds;
    and the CPU seconds each gateway process spent on those turns."""
    metadata = [("authorization", f"Bearer {token}")]
    channels = {name: grpc.aio.insecure_channel(address) for name, address in target.items()}
    stubs = {name: chat_pb2_grpc.ChatServiceStub(channel) for name, channel in channels.items()}
    samples: dict[str, list[float]] = {name: [] for name in channels}
    meter = CpuMeter(pids)
    cpu = dict.fromkeys(channels, 0.0)
    try:
        for name, stub in stubs.items():  # warm-up: the model is resolved and cached, connections opened
            for _ in range(20):
                stream = await gateway_stream(stub, metadata, [FAST])
                if stream.error or not stream.ttft:
                    raise RuntimeError(f"gateway ({name}) did not answer: {stream.error or 'no delta'}")
        for r in range(rounds):
            order = list(stubs) if r % 2 == 0 else list(reversed(stubs))
            for name in order:
                before = meter.snapshot()
                for _ in range(turns):
                    stream = await gateway_stream(stubs[name], metadata, [FAST])
                    if stream.error:
                        raise RuntimeError(f"gateway ({name}) answered {stream.error}")
                    samples[name].append(stream.ttft)
                cpu[name] += CpuMeter.delta(before, meter.snapshot())[name]
            STDERR.print(f"[dim]gateway round {r + 1}/{rounds} done[/dim]")
    finally:
        for channel in channels.values():
            await channel.close()
    return samples, cpu


class _DropSpans(SpanExporter):
    """Accepts every batch and keeps nothing: the cost measured is making and batching spans, not exporting."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def middleware_cost(calls: int) -> dict[str, float]:
    """Microseconds per request through ASGI for a trivial route: bare, with the metrics middleware, and with
    each kind of server span (recorded, or not sampled), lowest of five runs each."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    providers = {}
    for name, sampler in (("recorded", ALWAYS_ON), ("unsampled", ALWAYS_OFF)):
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
        providers[name] = provider

    def build(kind: str) -> Any:
        app = FastAPI()

        @app.get("/api/v1/things/{thing_id}")
        async def thing(thing_id: str) -> dict[str, str]:
            return {"id": thing_id}

        if kind == "metrics":
            app.add_middleware(HttpMetricsMiddleware, metrics=ServiceMetrics("bench", process_metrics=False))
        elif kind.startswith("modelhub "):
            app.add_middleware(ServerSpanMiddleware, tracer_provider=providers[kind.split()[1]])
        elif kind.startswith("opentelemetry "):
            FastAPIInstrumentor.instrument_app(
                app, tracer_provider=providers[kind.split()[1]], exclude_spans=["receive", "send"]
            )
        return app

    async def time_app(app: Any) -> float:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            return None

        async def call(n: int) -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/api/v1/things/{n}",
                "raw_path": f"/api/v1/things/{n}".encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"127.0.0.1")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            await app(scope, receive, send)

        for n in range(500):
            await call(n)
        began = time.perf_counter()
        for n in range(calls):
            await call(n)
        return (time.perf_counter() - began) / calls * 1e6

    kinds = [
        "bare",
        "metrics",
        "modelhub recorded",
        "modelhub unsampled",
        "opentelemetry recorded",
        "opentelemetry unsampled",
    ]
    apps = {kind: build(kind) for kind in kinds}

    async def run_all() -> dict[str, float]:
        results: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(5):
            for kind in kinds:
                results[kind].append(await time_app(apps[kind]))
        return {kind: min(values) for kind, values in results.items()}

    try:
        return asyncio.run(run_all())
    finally:
        for provider in providers.values():
            provider.shutdown()


def _pid(process: ServiceProcess) -> int:
    pid = process.recorded_pid()
    if pid is None:
        raise RuntimeError(f"{process.name} has no PID")
    return pid


def tracing_env(name: str, sink_port: int, service: str) -> dict[str, str]:
    """The OTEL_* variables of one variant: none (off), every trace (on), or 10 % of them (sampled)."""
    if name == "off":
        return {}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "OTEL_SERVICE_NAME": service}
    if name == "sampled":
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(SAMPLE_RATIO)
    return env


def ratio_table(label: str, unit: str, samples: dict[str, list[float]], scale: float, cpu: dict[str, float]) -> str:
    """p50/p99 of each variant with what it adds to "off", and the server's CPU per request (steadier than
    latency on a shared machine: it does not move with what else is scheduled on the cores)."""
    per_request = {name: cpu[name] / len(samples[name]) * 1e6 for name in samples}
    p50 = {name: percentile(values, 50) * scale for name, values in samples.items()}
    p99 = {name: percentile(values, 99) * scale for name, values in samples.items()}
    titles = {
        "off": "tracing off (metrics on)",
        "on": "tracing on, every trace (OTLP to a local sink)",
        "sampled": f"tracing on, {SAMPLE_RATIO:.0%} of traces sampled",
    }
    rows = []
    for name in VARIANTS:
        row = [titles[name], f"{len(samples[name]):,}", f"{p50[name]:.3f}", f"{p99[name]:.3f}"]
        if name == "off":
            row += ["", "", f"{per_request[name]:.0f}"]
        else:
            added = per_request[name] - per_request["off"]
            row += [
                f"**{p50[name] - p50['off']:+.3f}** / {p99[name] - p99['off']:+.3f}",
                f"**{p50[name] / p50['off']:.3f}x** / {p99[name] / p99['off']:.3f}x",
                f"{per_request[name]:.0f} ({added:+.0f}, {per_request[name] / per_request['off']:.2f}x)",
            ]
        rows.append(row)
    headers = [
        label,
        "samples",
        f"p50 {unit}",
        f"p99 {unit}",
        f"added p50 / p99 ({unit})",
        "ratio p50 / p99",
        "server CPU µs per request (added, ratio)",
    ]
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=500, help="model files to seed (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per service (default 10)")
    parser.add_argument("--requests", type=int, default=200, help="GETs per round and registry (default 200)")
    parser.add_argument("--turns", type=int, default=50, help="chat turns per round and gateway (default 50)")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, data) behind")
    args = parser.parse_args()
    sigterm_raises_interrupt()

    def log(message: str) -> None:
        STDERR.print(f"[dim]{message}[/dim]")

    with contextlib.ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-bench-obs-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root))
        stack.start(log)
        db = stack.database("modelhub_registry")
        secret = secrets.token_urlsafe(48)
        sink = cleanup.enter_context(otlp_sink())
        sink_port = sink.server_address[1]
        base: dict[str, object] = {
            **stack.service_values(db, secret),
            "connection_sync_seconds": 0,
            "allow_private_urls": True,  # the chat backend below is on loopback
            # One process each: the figures compare tracing on and off, not worker counts.
            "workers": 1,
        }
        settings = RegistrySettings(**{**base, "port": pick_free_port()})  # type: ignore[arg-type]
        asyncio.run(bootstrap.run_migrations(settings))
        urls, registry_pids = {}, {}
        for name in VARIANTS:
            port = pick_free_port()
            env = {**service_env(ENV_PREFIX, {**base, "port": port}), **tracing_env(name, sink_port, "registry")}
            process = ServiceProcess(
                root / f"registry-{name}", module="modelhub_registry", env=env, port=port, name=f"registry-{name}"
            )
            cleanup.callback(process.stop)
            process.start()
            urls[name] = process.base_url
            registry_pids[name] = _pid(process)
            log(f"registry ({name}) ready at {process.base_url}")
        admin = issue_token(secret, subject="bench-admin", role="admin", ttl_seconds=3600)

        # The gateways: one streaming backend, its models registered through the untraced registry.
        backend = BackendProcess(root / "backend", pick_free_port(), 8, 0.005)
        backend.start()
        cleanup.callback(backend.stop)
        with httpx.Client(base_url=urls["off"], headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
            connection = api.post("/api/v1/connections", json={"type": "ollama", "url": backend.url})
            connection.raise_for_status()
            api.post(f"/api/v1/connections/{connection.json()['id']}/sync").raise_for_status()
        gateway_db = stack.database("modelhub_gateway")
        gateway_base: dict[str, object] = {
            **stack.service_values(gateway_db, secret),
            "registry_url": urls["off"],
            "rag_url": "http://127.0.0.1:9",
            "allow_private_urls": True,
        }
        asyncio.run(
            gateway_bootstrap.run_migrations(
                ChatGatewaySettings(**{**gateway_base, "port": pick_free_port(), "grpc_port": pick_free_port()})  # type: ignore[arg-type]
            )
        )
        targets, gateway_pids = {}, {}
        for name in VARIANTS:
            port, grpc_port = pick_free_port(), pick_free_port()
            values = {**gateway_base, "port": port, "grpc_port": grpc_port}
            env = {**service_env(GATEWAY_PREFIX, values), **tracing_env(name, sink_port, "chat-gateway")}
            process = ServiceProcess(
                root / f"gateway-{name}", module="modelhub_chat_gateway", env=env, port=port, name=f"gateway-{name}"
            )
            cleanup.callback(process.stop)
            process.start()
            targets[name] = f"127.0.0.1:{grpc_port}"
            gateway_pids[name] = _pid(process)
            log(f"gateway ({name}) ready, gRPC on {targets[name]}")

        samples, registry_cpu = asyncio.run(
            run_http(urls, registry_pids, admin, args.models, args.rounds, args.requests)
        )
        user = issue_token(secret, subject="bench-user", role="user", ttl_seconds=3600)
        ttft, gateway_cpu = asyncio.run(measure_ttft(targets, gateway_pids, user, args.rounds, args.turns))
        costs = middleware_cost(20_000)
        exports = sink.exports

    print(f"\n{machine_summary()}\n")
    print(ratio_table("registry GET /api/v1/models/{id}", "ms", samples, 1000, registry_cpu))
    print()
    print(ratio_table("gateway Chat, time to first token", "ms", ttft, 1000, gateway_cpu))
    print(f"\nOTLP exports received by the sink: {exports:,} (batches)\n")
    bare = costs["bare"]
    print(
        markdown_table(
            ["ASGI call of a trivial route (in-process)", "µs per request", "added µs"],
            [[kind, f"{value:.1f}", "" if kind == "bare" else f"{value - bare:+.1f}"] for kind, value in costs.items()],
        )
    )


if __name__ == "__main__":
    main()
